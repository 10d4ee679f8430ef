/**
 * PostgreSQL as a sink, for use outside the gateway: `import { toPostgres } from 'ferry/postgres'`.
 * The same sink as a bridge's `postgres:` entry (pg underneath).
 */
import type { z } from 'zod';
import type { Sink } from '../core/stream.ts';
import { postgresSink } from '../postgres/sink.ts';
import { type StreamOptions, sinkOf } from './component.ts';

export type { Delivery } from '../core/delivery.ts';
export type { Envelope } from '../core/envelope.ts';
export type { Sink, SinkEvent, Source } from '../core/stream.ts';
export type { StreamOptions } from './component.ts';

/** The options of `toPostgres`: those of a bridge's `to: [{ postgres: ... }]` (docs/reference/sinks/postgres.md). */
export type PostgresSinkConfig = z.input<typeof postgresSink.schema>;

/**
 * An operator inserting each delivery as a row (columns from templates such as `${id}` or
 * `${payload.celsius}`), one statement per batch, acked after the commit; a row that cannot
 * fit its column is nacked alone, not retryable.
 */
export function toPostgres(config: PostgresSinkConfig, options?: StreamOptions): Sink {
  return sinkOf(postgresSink, config, options);
}
