import type { Counters, HistogramSeries } from '../core/component.ts';
import { metricSpec } from './catalogue.ts';
import { HistogramRegistry } from './histograms.ts';

/** In-process counters, read by /api/status, and the catalogue's histograms. Keyed by name and sorted labels. */
export class CounterRegistry implements Counters {
  readonly histograms = new HistogramRegistry((name) => metricSpec(name, 'histogram'));
  readonly #values = new Map<string, number>();
  /** Each key's name and labels, for exporters. */
  readonly #series = new Map<string, { readonly name: string; readonly labels: Readonly<Record<string, string>> }>();
  /**
   * Keys of labels objects counted before: per message, callers pass one object each time
   * (e.g. a bridge's `{ bridge }`), whose key is then not built again. Labels are not changed
   * once counted (the interface takes them read-only).
   */
  readonly #keys = new WeakMap<object, { readonly name: string; readonly key: string }>();

  count(name: string, labels?: Readonly<Record<string, string>>, by = 1): void {
    let key = name;
    if (labels !== undefined) {
      const known = this.#keys.get(labels);
      if (known !== undefined && known.name === name) key = known.key;
      else {
        key = keyOf(name, labels);
        this.#keys.set(labels, { name, key });
      }
    }
    const value = this.#values.get(key);
    if (value === undefined) this.#series.set(key, { name, labels: { ...labels } });
    this.#values.set(key, (value ?? 0) + by);
  }

  histogram(name: string, labels?: Readonly<Record<string, string>>): HistogramSeries {
    return this.histograms.series(name, labels);
  }

  /** Every counter by name, each with its labelled values. */
  families(): Map<string, { labels: Readonly<Record<string, string>>; value: number }[]> {
    const out = new Map<string, { labels: Readonly<Record<string, string>>; value: number }[]>();
    for (const [key, value] of [...this.#values].sort(([a], [b]) => a.localeCompare(b))) {
      const { name, labels } = this.#series.get(key) as { name: string; labels: Readonly<Record<string, string>> };
      const list = out.get(name) ?? [];
      list.push({ labels, value });
      out.set(name, list);
    }
    return out;
  }

  get(key: string): number {
    return this.#values.get(key) ?? 0;
  }

  snapshot(): Record<string, number> {
    return Object.fromEntries([...this.#values].sort(([a], [b]) => a.localeCompare(b)));
  }
}

/** `name{a=1,b=2}`, labels sorted; a single label (most counts, some per message) without sorting. */
function keyOf(name: string, labels: Readonly<Record<string, string>>): string {
  const names = Object.keys(labels);
  if (names.length === 0) return name;
  if (names.length === 1) return `${name}{${names[0] as string}=${labels[names[0] as string] as string}}`;
  return `${name}{${Object.entries(labels)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}=${v}`)
    .join(',')}}`;
}
