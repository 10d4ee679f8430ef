import { type Logger, pino } from 'pino';
import type { z } from 'zod';
import { ConfigError } from '../config/issues.ts';
import { ONE_SHOT_PARSE, issuesFromZod } from '../config/zod-issues.ts';
import type { ComponentContext, Counters, SinkComponent, SourceComponent } from '../core/component.ts';
import type { Sink, Source } from '../core/stream.ts';

/** What every public source, sink and operator takes besides its config. */
export interface StreamOptions {
  /** Names the stream in logs and errors (the gateway's bridge name); `library` unless given. */
  readonly name?: string;
  /** Where warnings go: a pino logger; by default warnings and errors to standard error. */
  readonly logger?: Logger;
  /** Receives the counters the gateway exports as metrics; none kept unless given. */
  readonly counters?: Counters;
  /** Relative paths in the config (TLS files) are relative to this directory; the working directory unless given. */
  readonly configDir?: string;
  /**
   * Receives the work a source still does after you unsubscribed (the postgres source
   * committing the batches whose messages were acked): await it before you close what it uses
   * or end the process. Sources without such work never call it.
   */
  readonly afterStop?: (work: Promise<void>) => void;
}

const ignoreCounts: Counters = { count: () => {} };

/** The context a component gets in the gateway, made from a library caller's options. */
export function contextFor(options: StreamOptions = {}, dataDir = process.cwd()): ComponentContext {
  const name = options.name ?? 'library';
  return {
    logger: options.logger ?? pino({ name: `ferry:${name}`, level: 'warn' }, pino.destination(2)),
    counters: options.counters ?? ignoreCounts,
    dataDir,
    bridge: name,
    configDir: options.configDir ?? process.cwd(),
    ...(options.afterStop === undefined ? {} : { afterStop: options.afterStop }),
  };
}

/**
 * Checks a config against a component's schema, as `ferry validate` checks a bridge file:
 * unknown keys and wrong values throw a ConfigError (code CONFIG_INVALID) naming each key path
 * and reason, e.g. `kafka: topic: a Kafka topic is 1 to 249 letters...`. Defaults are filled
 * in; the caller's object is not changed.
 */
export function validated<S extends z.ZodType>(kind: string, schema: S, config: unknown): z.output<S> {
  const result = schema.safeParse(config, ONE_SHOT_PARSE);
  if (result.success) return result.data;
  throw new ConfigError(issuesFromZod(result.error.issues, { path: kind, value: config, locate: () => ({ line: 0, column: 0 }) }));
}

export function sourceOf<S extends z.ZodType>(component: SourceComponent<S>, config: z.input<S>, options?: StreamOptions): Source {
  return component.create(validated(component.kind, component.schema, config), contextFor(options));
}

export function sinkOf<S extends z.ZodType>(component: SinkComponent<S>, config: z.input<S>, options?: StreamOptions, dataDir?: string): Sink {
  return component.create(validated(component.kind, component.schema, config), contextFor(options, dataDir));
}
