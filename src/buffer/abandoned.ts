import type { Logger } from 'pino';
import type { Counters } from '../core/component.ts';
import { FerryError } from '../core/errors.ts';
import { steadyNow } from '../core/steady-clock.ts';

/** What a delivery abandoned before it was stored is nacked with. */
export const ABANDONED = new FerryError('MESSAGE_REJECTED', "not stored: its device's connection closed before it was, so the device sends it again", {
  component: 'buffer',
  retryable: true,
});

/** At most one log line per this interval about abandoned messages; the counter has each one. */
const ABANDONED_LOG_MS = 60_000;

/**
 * The BufferWriter's account of deliveries abandoned before they were stored (their device's
 * connection closed without a PUBACK): each one counted, logged at most once a minute.
 */
export class AbandonedLog {
  readonly #logger: Logger;
  readonly #counters: Counters;
  #sinceLog = 0;
  #loggedAt = Number.NEGATIVE_INFINITY;

  constructor(logger: Logger, counters: Counters) {
    this.#logger = logger;
    this.#counters = counters;
  }

  /** Counts the abandoned deliveries of one commit, by bridge; `held` is what the writer holds now. */
  note(byBridge: ReadonlyMap<string, number>, held: number): void {
    let total = 0;
    for (const [bridge, count] of byBridge) {
      this.#counters.count('buffer.abandoned', { bridge }, count);
      total += count;
    }
    this.#sinceLog += total;
    const now = steadyNow();
    if (now - this.#loggedAt < ABANDONED_LOG_MS) return;
    this.#logger.info(
      { abandoned: this.#sinceLog, bridges: [...byBridge.keys()], held },
      "not storing messages whose device's connection closed before they were stored: the devices send them again",
    );
    this.#sinceLog = 0;
    this.#loggedAt = now;
  }
}
