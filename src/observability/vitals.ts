import type { Logger } from 'pino';
import type { Counters } from '../core/component.ts';
import { describeError } from '../core/errors.ts';
import { EventLoopMonitor, type EventLoopWindow } from './event-loop.ts';
import { HostMetrics, type HostReading } from './host-metrics.ts';

/** The latest host reading and event-loop window; null until the first period has passed. */
export interface VitalsReading {
  readonly host: HostReading | null;
  readonly eventLoop: EventLoopWindow | null;
}

export interface VitalsOptions {
  /** The data directory: its volume's free space is read. */
  readonly dataDir: string;
  readonly logger: Logger;
  readonly counters: Counters;
  /** How often the host is read and an event-loop window closes (ms). */
  readonly periodMs?: number;
  /** For tests: a made-up /proc. */
  readonly procRoot?: string;
}

/**
 * The gateway's vital signs, always on: host and process (CPU, memory, data volume, network,
 * from /proc and statfs) and the event loop (delay, utilisation). One unref'd timer reads them
 * every 2 s; /metrics, /api/status and the status page show the latest reading, so a scrape
 * costs nothing and every reader sees the same window. `stop()` ends the timer and the
 * event-loop histogram.
 */
export class Vitals {
  readonly #host: HostMetrics;
  readonly #loop = new EventLoopMonitor();
  readonly #logger: Logger;
  readonly #counters: Counters;
  readonly #timer: NodeJS.Timeout;
  #latest: VitalsReading = { host: null, eventLoop: null };
  #failing = false;

  constructor(options: VitalsOptions) {
    this.#host = new HostMetrics(options.dataDir, options.procRoot);
    this.#logger = options.logger;
    this.#counters = options.counters;
    // The first read sets the base that CPU shares and network rates are measured from.
    void this.#sample(false);
    this.#timer = setInterval(() => void this.#sample(true), options.periodMs ?? 2000).unref();
  }

  latest(): VitalsReading {
    return this.#latest;
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#loop.stop();
  }

  async #sample(rollLoop: boolean): Promise<void> {
    const eventLoop = rollLoop ? this.#loop.roll() : this.#latest.eventLoop;
    try {
      const host = await this.#host.read();
      this.#latest = { host, eventLoop };
      if (this.#failing) this.#logger.info('host metrics readable again');
      this.#failing = false;
    } catch (error) {
      // HostMetrics turns unreadable files into nulls; this is the unexpected rest, logged once.
      this.#latest = { host: this.#latest.host, eventLoop };
      this.#counters.count('host.read_errors');
      if (!this.#failing) this.#logger.warn({ err: describeError(error) }, `host metrics cannot be read: ${describeError(error)}`);
      this.#failing = true;
    }
  }
}
