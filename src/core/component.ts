import type { Logger } from 'pino';
import type { z } from 'zod';
import type { Sink, Source } from './stream.ts';

/** Counts events for /api/status and metrics exporters. Names are dotted, labels small. */
export interface Counters {
  count(name: string, labels?: Readonly<Record<string, string>>, by?: number): void;
}

/** What the runtime hands a component when it creates one. */
export interface ComponentContext {
  readonly logger: Logger;
  readonly counters: Counters;
  /** The gateway's data directory (absolute); components keep their files below it. */
  readonly dataDir: string;
  /** The bridge this component belongs to. */
  readonly bridge: string;
}

/**
 * A sink kind: its registry key, its config schema (with defaults and descriptions) and a
 * factory. The kind is declared once here so that config and registry cannot drift.
 */
export interface SinkComponent<S extends z.ZodType = z.ZodType> {
  readonly kind: string;
  readonly description: string;
  readonly schema: S;
  create(config: z.output<S>, ctx: ComponentContext): Sink;
}

export interface SourceComponent<S extends z.ZodType = z.ZodType, D = unknown> {
  readonly kind: string;
  readonly description: string;
  readonly schema: S;
  /** `deps` carries shared runtime objects the source taps, such as the embedded broker. */
  create(config: z.output<S>, ctx: ComponentContext, deps: D): Source;
}
