/**
 * Latencies in log-spaced buckets 1% wide, so a long run keeps constant memory; a percentile
 * is its bucket's upper bound (within 1% of the true value), the maximum is exact.
 */
export class LatencyHistogram {
  static readonly #GROWTH = Math.log(1.01);
  /** Bucket 0 holds everything up to 1 µs. */
  readonly #counts: number[] = [];
  #total = 0;
  #max = 0;

  get count(): number {
    return this.#total;
  }

  record(ms: number): void {
    const micros = Math.max(ms * 1000, 1);
    const bucket = Math.ceil(Math.log(micros) / LatencyHistogram.#GROWTH);
    while (this.#counts.length <= bucket) this.#counts.push(0);
    this.#counts[bucket] = (this.#counts[bucket] ?? 0) + 1;
    this.#total += 1;
    if (ms > this.#max) this.#max = ms;
  }

  /** Milliseconds below which `fraction` of the recorded latencies fall; undefined when empty. */
  percentile(fraction: number): number | undefined {
    if (this.#total === 0) return undefined;
    const rank = Math.ceil(fraction * this.#total);
    let seen = 0;
    for (let bucket = 0; bucket < this.#counts.length; bucket++) {
      seen += this.#counts[bucket] ?? 0;
      if (seen >= rank) return Math.min(Math.exp(bucket * LatencyHistogram.#GROWTH) / 1000, this.#max);
    }
    return this.#max;
  }

  get max(): number | undefined {
    return this.#total === 0 ? undefined : this.#max;
  }
}
