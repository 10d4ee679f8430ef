/** a / b to two decimals: how the benchmarks report a ratio. */
export function ratio(a: number, b: number): number {
  return Math.round((a / b) * 100) / 100;
}

/** The median of `values` (the upper middle one of an even count); the input is not reordered. */
export function median(values: readonly number[]): number {
  return [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number;
}
