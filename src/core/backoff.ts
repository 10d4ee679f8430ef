/** Exponential backoff: how long to wait before an attempt. */
export interface Backoff {
  /** First delay, in milliseconds. */
  readonly initialMs: number;
  /** Longest delay, in milliseconds. */
  readonly maxMs: number;
  /**
   * Spread of each delay around its value (0.2: ±20%), so that many clients failing together
   * do not retry together. 0 for none.
   */
  readonly jitter?: number;
}

/**
 * The delay before retry number `attempt` (1 for the first retry): `initialMs` doubled per
 * earlier retry, at most `maxMs`, spread by the jitter. `random` is for tests.
 */
export function backoffDelay(backoff: Backoff, attempt: number, random: () => number = Math.random): number {
  const base = Math.min(backoff.maxMs, backoff.initialMs * 2 ** Math.min(Math.max(attempt, 1) - 1, 30));
  const jitter = backoff.jitter ?? 0;
  return jitter === 0 ? base : Math.round(base * (1 - jitter + random() * 2 * jitter));
}
