import { metricSpec } from '../../observability/catalogue.ts';
import type { CounterRegistry } from '../../observability/counters.ts';
import type { VitalsReading } from '../../observability/vitals.ts';

/** One point of the status page's charts: rates since the previous point and the state at it. */
export interface SeriesPoint {
  /** When it was taken (ms since the epoch). */
  readonly t: number;
  /** Messages per second each bridge took in (`bridge.messages.in`). */
  readonly in: Readonly<Record<string, number>>;
  /** Messages per second each sink of each bridge wrote and had confirmed (`sink.messages.written`). */
  readonly written: Readonly<Record<string, Readonly<Record<string, number>>>>;
  /** Refusals and dead letters per second, all kinds together (see WATCHED). */
  readonly refused: number;
  readonly deadLettered: number;
  /** Open device sockets. */
  readonly devices: number;
  readonly hostCpu: number | null;
  readonly processCpu: number | null;
  readonly rssBytes: number | null;
  readonly loopDelayP99Ms: number | null;
}

/** A counter of refusals or dead letters, for the page's "recent" table. */
export interface RecentCount {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly kind: 'refused' | 'dead-lettered';
  /** The catalogue's one sentence on it. */
  readonly help: string;
  readonly total: number;
  /** How many came in the window the series covers. */
  readonly inWindow: number;
  /** The point at which it last grew, if within the window (ms since the epoch). */
  readonly lastAt: number | null;
}

export interface SeriesAnswer {
  readonly periodMs: number;
  readonly points: readonly SeriesPoint[];
  readonly recent: readonly RecentCount[];
}

/**
 * Counters the page lists as refusals (a device or message turned away, or a message dropped:
 * gone without being delivered or kept) and dead letters (kept aside for good).
 */
const WATCHED: Readonly<Record<string, RecentCount['kind']>> = {
  'mqtt.connections.refused': 'refused',
  'mqtt.publish.refused': 'refused',
  'mqtt.subscribe.refused': 'refused',
  'mqtt.deliveries.refused': 'refused',
  'buffer.refused': 'refused',
  'buffer.dropped': 'refused',
  'ratelimit.overflow': 'refused',
  'commands.refused': 'refused',
  // Dropped: a person at the site must see a message lost as readily as one refused.
  'mqtt.publish.qos0_not_stored': 'refused',
  'mqtt.client.qos0_not_stored': 'refused',
  'mqtt.deliveries.discarded': 'refused',
  'buffer.expired': 'refused',
  'buffer.dead_letters.dropped': 'refused',
  'handler.outputs.lost': 'refused',
  'commands.expired': 'refused',
  'buffer.dead_letters': 'dead-lettered',
  'bridge.messages.rejected': 'dead-lettered',
  'handler.rejected': 'dead-lettered',
};

export interface SeriesSources {
  readonly counters: CounterRegistry;
  readonly devices: () => number;
  readonly vitals: () => VitalsReading;
}

/**
 * What the status page charts: every `periodMs` (2 s), message rates per bridge and sink from
 * the counters, refusals and dead letters, devices, CPU, memory and event-loop delay, for the
 * last `keep` points (10 minutes). Reading counters costs a sort of a few hundred keys; the
 * buffer is not queried. One unref'd timer; `stop()` ends it.
 */
export class StatusSeries {
  readonly #sources: SeriesSources;
  readonly #periodMs: number;
  readonly #keep: number;
  readonly #timer: NodeJS.Timeout;
  readonly #points: SeriesPoint[] = [];
  /** The watched counters' values at each point, by key (`name` + labels as JSON). */
  readonly #totals: ReadonlyMap<string, number>[] = [];
  #previous: { readonly at: number; readonly totals: Map<string, number> };

  constructor(sources: SeriesSources, periodMs = 2000, keep = 300) {
    this.#sources = sources;
    this.#periodMs = periodMs;
    this.#keep = keep;
    this.#previous = { at: Date.now(), totals: this.#read() };
    this.#timer = setInterval(() => this.sample(), periodMs).unref();
  }

  /** The points after `after` (ms since the epoch; 0 for all) and the recent refusals and dead letters. */
  since(after: number): SeriesAnswer {
    return { periodMs: this.#periodMs, points: this.#points.filter((p) => p.t > after), recent: this.#recent() };
  }

  /** Takes a point now (the timer calls it; tests may too). */
  sample(now = Date.now()): void {
    const totals = this.#read();
    const seconds = Math.max(0.001, (now - this.#previous.at) / 1000);
    const rate = (key: string) => Math.max(0, (totals.get(key) ?? 0) - (this.#previous.totals.get(key) ?? 0)) / seconds;
    const inRates: Record<string, number> = {};
    const written: Record<string, Record<string, number>> = {};
    let refused = 0;
    let deadLettered = 0;
    for (const key of totals.keys()) {
      const { name, labels } = parseKey(key);
      if (name === 'bridge.messages.in' && labels['bridge'] !== undefined) inRates[labels['bridge']] = rate(key);
      else if (name === 'sink.messages.written' && labels['bridge'] !== undefined && labels['sink'] !== undefined) {
        (written[labels['bridge']] ??= {})[labels['sink']] = rate(key);
      } else if (WATCHED[name] === 'refused') refused += rate(key);
      else if (WATCHED[name] === 'dead-lettered') deadLettered += rate(key);
    }
    const { host, eventLoop } = this.#sources.vitals();
    this.#points.push({
      t: now,
      in: inRates,
      written,
      refused,
      deadLettered,
      devices: this.#sources.devices(),
      hostCpu: host?.hostCpu ?? null,
      processCpu: host?.processCpu ?? null,
      rssBytes: host?.memory.processRssBytes ?? null,
      loopDelayP99Ms: eventLoop?.delayP99Ms ?? null,
    });
    this.#totals.push(new Map([...totals].filter(([key]) => WATCHED[parseKey(key).name] !== undefined)));
    if (this.#points.length > this.#keep) {
      this.#points.shift();
      this.#totals.shift();
    }
    this.#previous = { at: now, totals };
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  /** The counters the series needs (rates and watched ones), by key. */
  #read(): Map<string, number> {
    const totals = new Map<string, number>();
    for (const [name, values] of this.#sources.counters.families()) {
      if (name !== 'bridge.messages.in' && name !== 'sink.messages.written' && WATCHED[name] === undefined) continue;
      for (const { labels, value } of values) totals.set(keyOf(name, labels), value);
    }
    return totals;
  }

  #recent(): RecentCount[] {
    const last = this.#totals.at(-1);
    if (last === undefined) return [];
    const first = this.#totals[0] as ReadonlyMap<string, number>;
    return [...last].map(([key, total]) => {
      const { name, labels } = parseKey(key);
      let lastAt: number | null = null;
      for (let i = this.#totals.length - 1; i > 0 && lastAt === null; i--) {
        if ((this.#totals[i]?.get(key) ?? 0) > (this.#totals[i - 1]?.get(key) ?? 0)) lastAt = this.#points[i]?.t ?? null;
      }
      return {
        name,
        labels,
        kind: WATCHED[name] as RecentCount['kind'],
        help: (metricSpec(name, 'counter')?.help ?? '').replace(/`/g, ''),
        total,
        inWindow: total - (first.get(key) ?? 0),
        lastAt,
      };
    });
  }
}

function keyOf(name: string, labels: Readonly<Record<string, string>>): string {
  return JSON.stringify([name, labels]);
}

function parseKey(key: string): { name: string; labels: Record<string, string> } {
  const [name, labels] = JSON.parse(key) as [string, Record<string, string>];
  return { name, labels };
}
