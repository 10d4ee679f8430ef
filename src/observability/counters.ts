import type { Counters } from '../core/component.ts';

/** In-process counters, read by /api/status. Keyed by name and sorted labels. */
export class CounterRegistry implements Counters {
  readonly #values = new Map<string, number>();

  count(name: string, labels?: Readonly<Record<string, string>>, by = 1): void {
    const key = labels === undefined ? name : keyOf(name, labels);
    this.#values.set(key, (this.#values.get(key) ?? 0) + by);
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
  return `${name}{${Object.entries(labels).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k}=${v}`).join(',')}}`;
}
