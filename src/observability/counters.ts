import type { Counters } from '../core/component.ts';

/** In-process counters, read by /api/status. Keyed by name and sorted labels. */
export class CounterRegistry implements Counters {
  readonly #values = new Map<string, number>();

  count(name: string, labels?: Readonly<Record<string, string>>, by = 1): void {
    const key = labels === undefined || Object.keys(labels).length === 0 ? name : `${name}{${Object.entries(labels).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k}=${v}`).join(',')}}`;
    this.#values.set(key, (this.#values.get(key) ?? 0) + by);
  }

  get(key: string): number {
    return this.#values.get(key) ?? 0;
  }

  snapshot(): Record<string, number> {
    return Object.fromEntries([...this.#values].sort(([a], [b]) => a.localeCompare(b)));
  }
}
