import type { HistogramSeries } from '../core/component.ts';
import type { MetricSpec } from './metrics/spec.ts';

/** What a histogram series holds: cumulative-ready bucket counts, the sum and the count. */
export interface HistogramData {
  readonly labels: Readonly<Record<string, string>>;
  readonly bounds: readonly number[];
  /** Per bucket (not cumulative), one more than `bounds` for +Inf. */
  readonly counts: readonly number[];
  readonly sum: number;
  readonly count: number;
  readonly since: number;
}

class Series implements HistogramSeries, HistogramData {
  readonly counts: number[];
  sum = 0;
  count = 0;
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly bounds: readonly number[];
  /** When the series began (ms since the epoch): the start of its cumulative counts. */
  readonly since = Date.now();

  constructor(name: string, labels: Readonly<Record<string, string>>, bounds: readonly number[]) {
    this.name = name;
    this.labels = labels;
    this.bounds = bounds;
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }

  record(value: number, times = 1): void {
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && value > (bounds[i] as number)) i++;
    this.counts[i] = (this.counts[i] as number) + times;
    this.sum += value * times;
    this.count += times;
  }
}

/**
 * Histograms of the catalogue, kept in process (fixed buckets, no allocation per value) for
 * /metrics and, read at each export, for OpenTelemetry (otel.ts): recording a value costs the
 * same whether telemetry is exported or not.
 */
export class HistogramRegistry {
  readonly #series = new Map<string, Series>();
  readonly #specOf: (name: string) => MetricSpec | undefined;

  constructor(specOf: (name: string) => MetricSpec | undefined) {
    this.#specOf = specOf;
  }

  series(name: string, labels: Readonly<Record<string, string>> = {}): HistogramSeries {
    const key = `${name}${JSON.stringify(labels)}`;
    let series = this.#series.get(key);
    if (series === undefined) {
      const spec = this.#specOf(name);
      if (spec?.type !== 'histogram' || spec.buckets === undefined) throw new Error(`histogram '${name}' is not declared in src/observability/metrics/`);
      series = new Series(name, { ...labels }, spec.buckets);
      this.#series.set(key, series);
    }
    return series;
  }

  /** Every series with a value, by histogram name. */
  families(): Map<string, HistogramData[]> {
    const out = new Map<string, HistogramData[]>();
    for (const series of this.#series.values()) {
      if (series.count === 0) continue;
      const list = out.get(series.name) ?? [];
      list.push(series);
      out.set(series.name, list);
    }
    return out;
  }
}
