/** Tokens refilled at `ratePerSec`, holding at most `burst`; starts full. */
export class TokenBucket {
  readonly #ratePerMs: number;
  readonly #burst: number;
  #tokens: number;
  #at: number;

  constructor(ratePerSec: number, burst: number) {
    this.#ratePerMs = ratePerSec / 1000;
    this.#burst = burst;
    this.#tokens = burst;
    this.#at = performance.now();
  }

  take(): boolean {
    this.#refill();
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }

  /** Milliseconds until the next token, at least 1. */
  waitMs(): number {
    this.#refill();
    return Math.max(1, Math.ceil((1 - this.#tokens) / this.#ratePerMs));
  }

  #refill(): void {
    const now = performance.now();
    this.#tokens = Math.min(this.#burst, this.#tokens + (now - this.#at) * this.#ratePerMs);
    this.#at = now;
  }
}
