import type { Logger } from 'pino';
import type { Counters } from '../core/component.ts';
import { backoffDelay } from '../core/backoff.ts';
import { isCorruption } from '../sqlite/open-checked.ts';
import type { BufferPolicy } from './config.ts';
import { steadyMsSince, steadyNow } from '../core/steady-clock.ts';

/**
 * A reader's statements on the buffer that fail in a row: a read, or the move of its cursor on a
 * full disk, or a lock another process held past the busy timeout. Each is counted
 * (`buffer.errors{reason="read_failed"}`), the first of a run of them is logged, and the reader
 * tries again after a backoff doubling from `retryInitialMs` up to `retryMaxMs`, so that a sink
 * goes on by itself once the disk takes writes again. A corrupt or closed buffer is not tried again.
 */
export class ReadFailures {
  readonly #policy: BufferPolicy;
  readonly #logger: Logger;
  readonly #counters: Counters;
  #count = 0;
  #since = 0;

  /** `logger` names the sink (sinkLogger). */
  constructor(policy: BufferPolicy, logger: Logger, counters: Counters) {
    this.#policy = policy;
    this.#logger = logger;
    this.#counters = counters;
  }

  /** Failures since the last try that worked. */
  get count(): number {
    return this.#count;
  }

  /** Whether a reader tries again after `error`: not when the buffer is corrupt or closed. */
  static retryable(error: unknown, open: boolean): boolean {
    return open && !isCorruption(error);
  }

  /** Notes a failure; returns how long to wait before the next try. */
  failed(error: unknown): number {
    this.#count += 1;
    this.#counters.count('buffer.errors', { reason: 'read_failed' });
    const retryInMs = backoffDelay({ initialMs: this.#policy.retryInitialMs, maxMs: this.#policy.retryMaxMs, jitter: 0.2 }, this.#count);
    if (this.#count === 1) {
      this.#since = steadyNow();
      this.#logger.warn({ err: error, retryInMs }, 'reading the buffer or moving the cursor failed; trying again');
    }
    return retryInMs;
  }

  /** A try that worked: the end of a run of failures is logged. */
  worked(): void {
    if (this.#count === 0) return;
    this.#logger.info({ failedForMs: steadyMsSince(this.#since), attempts: this.#count }, 'reading the buffer works again');
    this.#count = 0;
  }
}
