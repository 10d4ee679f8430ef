import type { Logger } from 'pino';
import { steadyNow } from '../core/steady-clock.ts';

/** Who a refusal is about, as it appears in the log: `{ clientId }`, `{ address }`, or both. */
export type RefusedParty = Readonly<Record<string, string | undefined>>;

export interface Refused {
  readonly who: RefusedParty;
  /** Why: the same word as the refusal's counter label. */
  readonly reason: string;
  /** The log message of the first line, e.g. 'subscription refused by the ACL'. */
  readonly message: string;
  /** More fields for the first line (the filter, the topic); not part of the key. */
  readonly detail?: Readonly<Record<string, unknown>>;
}

export interface RefusalLogOptions {
  readonly logger: Logger;
  /** Length of an interval: the first refusal of a party and reason is logged, the rest are summed up once per interval. */
  readonly intervalMs: number;
  /** Most parties and reasons tracked one by one; refusals of others are summed up together. */
  readonly maxKeys?: number;
}

interface Entry {
  readonly who: RefusedParty;
  readonly reason: string;
  readonly message: string;
  suppressed: number;
  /** When the latest refusal of this party and reason came. */
  last: number;
}

export const DEFAULT_REFUSAL_LOG_INTERVAL_MS = 60_000;
const DEFAULT_MAX_KEYS = 1000;

/**
 * Logs refusals without letting a client fill the disk with them (issue 16: one client wrote
 * 300,000 warning lines, 373 MB, in 12 s with refused subscriptions; 4,000 sockets over a
 * limit wrote 4,000 lines). The first refusal of a party (a client id or an address) for a
 * reason is logged in full; further ones are counted, and once per interval a summary line
 * says how many were not logged. A party and reason quiet for a whole interval are forgotten,
 * so their next refusal is logged in full again. At most `maxKeys` parties and reasons are
 * tracked; refusals beyond them are summed up per reason in one line per interval, so the log
 * grows by a bounded number of lines per interval whatever an attacker does.
 *
 * Counting is the caller's: every refusal is counted in its metric, logged or not. Any part
 * of the broker that refuses a client (logins, sockets, subscriptions, publishes, per-client
 * caps) logs through the broker's one RefusalLog.
 */
export class RefusalLog {
  readonly #logger: Logger;
  readonly #intervalMs: number;
  readonly #maxKeys: number;
  readonly #entries = new Map<string, Entry>();
  /** Refusals of parties past maxKeys, per reason: [refusals, the message of the first]. */
  readonly #overflow = new Map<string, { count: number; message: string }>();
  #timer: NodeJS.Timeout | undefined;

  constructor(options: RefusalLogOptions) {
    this.#logger = options.logger;
    this.#intervalMs = options.intervalMs;
    this.#maxKeys = options.maxKeys ?? DEFAULT_MAX_KEYS;
  }

  /** Logs one refusal, or counts it for the interval's summary. */
  refused(refusal: Refused): void {
    const key = `${refusal.reason}\u0000${refusal.message}\u0000${JSON.stringify(refusal.who)}`;
    const entry = this.#entries.get(key);
    const now = steadyNow();
    if (entry !== undefined) {
      entry.suppressed += 1;
      entry.last = now;
      return;
    }
    this.#start();
    if (this.#entries.size >= this.#maxKeys) {
      const other = this.#overflow.get(refusal.reason);
      if (other === undefined) this.#overflow.set(refusal.reason, { count: 1, message: refusal.message });
      else other.count += 1;
      return;
    }
    this.#entries.set(key, { who: refusal.who, reason: refusal.reason, message: refusal.message, suppressed: 0, last: now });
    this.#logger.warn({ ...refusal.who, reason: refusal.reason, ...refusal.detail }, refusal.message);
  }

  /** Writes the pending summaries and stops the timer. */
  close(): void {
    this.#flush(true);
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #start(): void {
    if (this.#timer !== undefined) return;
    this.#timer = setInterval(() => this.#flush(false), this.#intervalMs);
    this.#timer.unref();
  }

  #flush(closing: boolean): void {
    const every = seconds(this.#intervalMs);
    const now = steadyNow();
    for (const [key, entry] of this.#entries) {
      if (entry.suppressed === 0) {
        // Forgotten once quiet for a whole interval (the timer is shared, so not at every tick).
        if (closing || now - entry.last >= this.#intervalMs) this.#entries.delete(key);
        continue;
      }
      this.#logger.warn({ ...entry.who, reason: entry.reason, suppressed: entry.suppressed }, `${entry.message}: ${entry.suppressed} more not logged in the last ${every}`);
      entry.suppressed = 0;
      if (closing) this.#entries.delete(key);
    }
    for (const [reason, other] of this.#overflow) {
      this.#logger.warn({ reason, suppressed: other.count }, `${other.message}: ${other.count} more from other clients and addresses not logged in the last ${every}`);
    }
    this.#overflow.clear();
    if (this.#entries.size === 0 && this.#timer !== undefined) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }
}

function seconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`;
}
