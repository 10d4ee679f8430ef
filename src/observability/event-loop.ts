import { type EventLoopUtilization, type IntervalHistogram, monitorEventLoopDelay, performance } from 'node:perf_hooks';

/** How late the event loop ran its timers, and how busy it was, over one window. */
export interface EventLoopWindow {
  /** The window's length in ms (from the previous `roll` to this one). */
  readonly windowMs: number;
  /** Delay percentiles and maximum, in ms; 0 when the window had no sample. */
  readonly delayP50Ms: number;
  readonly delayP99Ms: number;
  readonly delayMaxMs: number;
  /** Share of the window the loop spent running code rather than waiting for I/O (0..1). */
  readonly utilisation: number;
  /** The delay timer's period in this window, ms: 10 while the gateway has work, 250 while idle. */
  readonly resolutionMs: number;
}

export interface EventLoopMonitorOptions {
  /** The delay timer's period while the loop has work, ms. */
  readonly busyResolutionMs?: number;
  /** The delay timer's period after a window the loop spent idle, ms. */
  readonly idleResolutionMs?: number;
  /** The busy share of a window under which the next window is timed at `idleResolutionMs`. */
  readonly idleBelow?: number;
}

/**
 * The busy share of a window (0..1) under which the loop counts as idle. An idle gateway of the
 * embedded default is busy about 0.5% of the time (its status sampling every 2 s); 100 QoS 1
 * messages a second to Kafka keep it busy several percent.
 */
const IDLE_BELOW = 0.02;

/**
 * Event-loop delay (perf_hooks monitorEventLoopDelay: how much later than due its timer ran) and
 * utilisation, in windows: `roll()` closes the current window, returns its figures and starts
 * the next one. Its owner calls it on a fixed period (Vitals: every 2 s), so that every reader
 * sees the same window rather than "since whoever read last". The histogram cannot be merged
 * into a sliding window (Node refuses an ELDHistogram in `add`), hence fixed windows.
 *
 * The delay's timer runs every 10 ms while the loop has work, and every 250 ms after a window in
 * which it was busy less than 2% of the time. Every 10 ms for good, the timer alone woke an idle
 * gateway 100 times a second and made up about 70% of its CPU (9.5-13.3 against 3.2 ms a second,
 * docs/benchmarks.md "An idle gateway's timers"). While idle, a stall shorter than 250 ms may be
 * missed by the delay (the timer was not due during it), but not by the utilisation, which
 * brings the 10 ms timer back from the next window on.
 */
export class EventLoopMonitor {
  readonly #busyMs: number;
  readonly #idleMs: number;
  readonly #idleBelow: number;
  #delay: IntervalHistogram;
  #resolutionMs: number;
  #utilisation: EventLoopUtilization;
  #since = performance.now();

  constructor(options: EventLoopMonitorOptions = {}) {
    this.#busyMs = options.busyResolutionMs ?? 10;
    this.#idleMs = options.idleResolutionMs ?? 250;
    this.#idleBelow = options.idleBelow ?? IDLE_BELOW;
    // A start is work: the first window is timed finely.
    this.#resolutionMs = this.#busyMs;
    this.#delay = this.#histogram(this.#resolutionMs);
    this.#utilisation = performance.eventLoopUtilization();
  }

  /** The delay timer's period in the current window, ms. */
  get resolutionMs(): number {
    return this.#resolutionMs;
  }

  roll(): EventLoopWindow {
    const now = performance.now();
    const resolutionMs = this.#resolutionMs;
    const delay = this.#delay;
    // The histogram records the time between two runs of its own timer, which includes the
    // timer's period: the delay is what exceeds it (as Fastify's under-pressure reads it).
    const ms = (ns: number) => (delay.count === 0 ? 0 : Math.max(0, ns / 1e6 - resolutionMs));
    const current = performance.eventLoopUtilization();
    const utilisation = performance.eventLoopUtilization(current, this.#utilisation).utilization;
    const window: EventLoopWindow = {
      windowMs: Math.round(now - this.#since),
      delayP50Ms: ms(delay.percentile(50)),
      delayP99Ms: ms(delay.percentile(99)),
      delayMaxMs: ms(delay.max),
      utilisation,
      resolutionMs,
    };
    const next = utilisation < this.#idleBelow ? this.#idleMs : this.#busyMs;
    if (next === resolutionMs) delay.reset();
    else {
      // A histogram's period is fixed when it is made.
      delay.disable();
      this.#resolutionMs = next;
      this.#delay = this.#histogram(next);
    }
    this.#utilisation = current;
    this.#since = now;
    return window;
  }

  stop(): void {
    this.#delay.disable();
  }

  #histogram(resolutionMs: number): IntervalHistogram {
    const histogram = monitorEventLoopDelay({ resolution: resolutionMs });
    histogram.enable();
    return histogram;
  }
}
