import type { SinkTracing } from './tracing.ts';
import type { Logger } from 'pino';
import type { z } from 'zod';
import type { Sink, Source } from './stream.ts';

/** Counts events for /api/status and metrics exporters. Names are dotted, labels small. */
export interface Counters {
  count(name: string, labels?: Readonly<Record<string, string>>, by?: number): void;
  /**
   * The series of a histogram declared in the catalogue, to record values into; look it up
   * once (per bridge and sink) and keep it. Absent where nothing keeps histograms (tests).
   */
  histogram?(name: string, labels?: Readonly<Record<string, string>>): HistogramSeries;
}

/** One labelled series of a histogram. */
export interface HistogramSeries {
  /** Records `value` (in the histogram's unit) `times` times (1 when absent). */
  record(value: number, times?: number): void;
}

/** What the runtime hands a component when it creates one. */
export interface ComponentContext {
  readonly logger: Logger;
  readonly counters: Counters;
  /** The gateway's data directory (absolute); components keep their files below it. */
  readonly dataDir: string;
  /** The bridge this component belongs to. */
  readonly bridge: string;
  /** Directory of the bridge's file: relative paths in a component's config (TLS files) are relative to it. */
  readonly configDir?: string;
  /**
   * The topic filters of the bridge's source (its `filters`), from which a sink's message
   * templates take their `${1}` and `${#}` captures; empty when the source has none.
   */
  readonly sourceFilters?: readonly string[];
  /**
   * Hands the bridge work a component still does after it was unsubscribed (a source's last
   * offset commit, leaving its consumer group): the bridge's stop waits for it. Absent when
   * nothing waits.
   */
  readonly afterStop?: (work: Promise<void>) => void;
  /**
   * A source with something to tell of its upstream (its connection, what it holds unacknowledged,
   * losses the upstream reported) registers how to read it; the bridge's status (/api/status)
   * shows it as `source`. Absent when nothing shows it.
   */
  readonly reportStatus?: (read: () => Readonly<Record<string, unknown>>) => void;

  /** Set for a sink while traces are exported: its batch writes run through it. */
  readonly tracing?: SinkTracing;
  /**
   * Tells the gateway that a file of the component cannot be trusted until the process restarts
   * (a failed sync of its WAL, a corrupt file another part still has open); `ferry run` then stops
   * and exits 75 for its service manager.
   * Absent outside a gateway.
   */
  readonly restartNeeded?: (why: string) => void;
}

/** A message template in a component's config, and where it is (relative to the config). */
export interface TemplateAt {
  readonly path: readonly (string | number)[];
  readonly template: string;
}

/**
 * A file a component's config names (a TLS certificate, a password file), and where (relative
 * to the config). A reload compares its content, so a file replaced in place restarts the
 * component's bridge.
 */
export interface FileAt {
  readonly path: readonly (string | number)[];
  /** As written: relative paths are relative to the bridge file's directory. */
  readonly file: string;
  /** A secret (a password file, any text) read when the component starts: not checked as a PEM file at config loading. */
  readonly secret?: true;
}

/**
 * A sink kind: its registry key, its config schema (with defaults and descriptions) and a
 * factory. The kind is declared once here so that config and registry cannot drift.
 */
export interface SinkComponent<S extends z.ZodType = z.ZodType, D = void> {
  readonly kind: string;
  readonly description: string;
  readonly schema: S;
  /**
   * The message templates in a config (`${1}`, `${payload.x}`...): config loading checks each
   * against the source's `filters`, so that `${2}` under a filter with one `+` is reported
   * at its line instead of failing every message.
   */
  templates?(config: z.output<S>): readonly TemplateAt[];
  /** The files a config names: config loading checks each PEM file can be read, at its line; a reload compares their contents. */
  files?(config: z.output<S>): readonly FileAt[];
  /** `deps` carries shared runtime objects, such as the embedded broker a device sink publishes on. */
  create(config: z.output<S>, ctx: ComponentContext, deps: D): Sink;
}

export interface SourceComponent<S extends z.ZodType = z.ZodType, D = void> {
  readonly kind: string;
  readonly description: string;
  readonly schema: S;
  /**
   * True when the source keeps each message itself until it is acked (a Kafka topic with
   * committed offsets, a broker's persistent session): its bridge then hands deliveries to
   * the sinks directly instead of copying them into the local buffer first, and the source's
   * ack waits for every sink. False (the default) for devices, whose messages exist nowhere
   * else once acknowledged.
   */
  readonly keepsMessages?: boolean;
  /**
   * What `overflow: refuse` does to this source's messages when that is not "they wait at the
   * sender": logged as a warning when a bridge of this source is configured so (issue 19).
   */
  readonly refuseCaveat?: string;
  /**
   * The MQTT topic filters the source's messages match, for the `${1}`/`${#}` captures of
   * its bridge's templates. A source without filters (undefined) allows no captures.
   */
  filters?(config: z.output<S>): readonly string[];
  /** The files a config names: config loading checks each PEM file can be read, at its line; a reload compares their contents. */
  files?(config: z.output<S>): readonly FileAt[];
  /** `deps` carries shared runtime objects the source taps, such as the embedded broker. */
  create(config: z.output<S>, ctx: ComponentContext, deps: D): Source;
}
