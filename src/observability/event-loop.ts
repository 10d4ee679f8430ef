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
}

/**
 * Event-loop delay (perf_hooks monitorEventLoopDelay, a timer every 10 ms: how much later than
 * due it ran) and utilisation,
 * in windows: `roll()` closes the current window, returns its figures and starts the next one.
 * Its owner calls it on a fixed period (Vitals: every 2 s), so that every reader sees the same
 * window rather than "since whoever read last". The histogram cannot be merged into a sliding
 * window (Node refuses an ELDHistogram in `add`), hence fixed windows.
 */
export class EventLoopMonitor {
  readonly #delay: IntervalHistogram;
  readonly #resolutionMs: number;
  #utilisation: EventLoopUtilization;
  #since = performance.now();

  constructor(resolutionMs = 10) {
    this.#resolutionMs = resolutionMs;
    this.#delay = monitorEventLoopDelay({ resolution: resolutionMs });
    this.#delay.enable();
    this.#utilisation = performance.eventLoopUtilization();
  }

  roll(): EventLoopWindow {
    const now = performance.now();
    // The histogram records the time between two runs of its own timer, which includes the
    // timer's period: the delay is what exceeds it (as Fastify's under-pressure reads it).
    const ms = (ns: number) => (this.#delay.count === 0 ? 0 : Math.max(0, ns / 1e6 - this.#resolutionMs));
    const current = performance.eventLoopUtilization();
    const window: EventLoopWindow = {
      windowMs: Math.round(now - this.#since),
      delayP50Ms: ms(this.#delay.percentile(50)),
      delayP99Ms: ms(this.#delay.percentile(99)),
      delayMaxMs: ms(this.#delay.max),
      utilisation: performance.eventLoopUtilization(current, this.#utilisation).utilization,
    };
    this.#delay.reset();
    this.#utilisation = current;
    this.#since = now;
    return window;
  }

  stop(): void {
    this.#delay.disable();
  }
}
