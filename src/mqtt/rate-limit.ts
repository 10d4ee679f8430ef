import { steadyNow } from '../core/steady-clock.ts';

/**
 * Keys of each kind (counted, blocked) past which those whose window or block is over are
 * forgotten. A sweep that leaves more (keys all still counted or blocked: a flood of guessed
 * usernames, of addresses) puts the next one off until twice as many are held: a sweep on every
 * new key once past this many cost O(keys) each, 19 s of event loop for 80,000 keys blocked.
 */
const MAX_KEYS = 10_000;

/**
 * Counts events per key in a sliding window and blocks a key for `blockMs` once it reached
 * `max`. Keys are forgotten when their window or block is over, so memory stays bounded by the
 * keys active in one window and those blocked in one `blockMs`.
 */
export class WindowLimiter {
  readonly #max: number;
  readonly #windowMs: number;
  readonly #blockMs: number;
  readonly #events = new Map<string, number[]>();
  readonly #blocked = new Map<string, number>();
  /** Sizes of #events and #blocked past which the next sweep runs. */
  #sweepAt = { events: MAX_KEYS, blocked: MAX_KEYS };

  constructor(options: { max: number; windowMs: number; blockMs: number }) {
    this.#max = options.max;
    this.#windowMs = options.windowMs;
    this.#blockMs = options.blockMs;
  }

  blocked(key: string, now = steadyNow()): boolean {
    const until = this.#blocked.get(key);
    if (until === undefined) return false;
    if (until > now) return true;
    this.#blocked.delete(key);
    return false;
  }

  /** Records one event; true when that made the key reach the limit (it is now blocked). */
  record(key: string, now = steadyNow()): boolean {
    const recent = (this.#events.get(key) ?? []).filter((t) => t > now - this.#windowMs);
    recent.push(now);
    if (recent.length >= this.#max) {
      this.#events.delete(key);
      this.#blocked.set(key, now + this.#blockMs);
      // A key blocked is seldom seen again (a guessed username): its block is forgotten here.
      if (this.#blocked.size > this.#sweepAt.blocked) this.#sweep(now);
      return true;
    }
    this.#events.set(key, recent);
    if (this.#events.size > this.#sweepAt.events) this.#sweep(now);
    return false;
  }

  /**
   * Takes back the latest event of `key`: an attempt recorded when it started that turned out
   * not to count (a login whose password was right). A block already set stays.
   */
  release(key: string): void {
    const recent = this.#events.get(key);
    if (recent === undefined) return;
    recent.pop();
    if (recent.length === 0) this.#events.delete(key);
  }

  /** Keys remembered, counted or blocked (for tests). */
  get size(): number {
    return this.#events.size + this.#blocked.size;
  }

  #sweep(now: number): void {
    for (const [key, times] of this.#events) if ((times.at(-1) ?? 0) <= now - this.#windowMs) this.#events.delete(key);
    for (const [key, until] of this.#blocked) if (until <= now) this.#blocked.delete(key);
    this.#sweepAt = { events: Math.max(MAX_KEYS, 2 * this.#events.size), blocked: Math.max(MAX_KEYS, 2 * this.#blocked.size) };
  }
}
