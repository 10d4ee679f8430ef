/**
 * PostgreSQL as streams and a typed database, for use outside the gateway:
 * `import { fromPostgres, toPostgres, postgresDatabase } from 'ferry/postgres'`. The same
 * source and sink as a bridge's `postgres:` entries, and the Kysely instance a handler's
 * `tools.database(name)` gives (pg underneath, one pool per distinct connection settings).
 */
import { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { z } from 'zod';
import type { Sink, Source } from '../core/stream.ts';
import { postgresDatabaseSchema } from '../postgres/database-schema.ts';
import { postgresDatabaseDialect } from '../postgres/kysely.ts';
import { postgresSource } from '../postgres/outbox-source.ts';
import { postgresSink } from '../postgres/sink.ts';
import { type StreamOptions, contextFor, sinkOf, sourceOf, validated } from './component.ts';

export type { Kysely } from 'kysely';
export type { Delivery } from '../core/delivery.ts';
export type { Envelope } from '../core/envelope.ts';
export type { Sink, SinkEvent, Source } from '../core/stream.ts';
export type { StreamOptions } from './component.ts';

/** The options of `fromPostgres`: those of a bridge's `from: { postgres: ... }` (docs/reference/sources/postgres.md). */
export type PostgresSourceConfig = z.input<typeof postgresSource.schema>;
/** The options of `toPostgres`: those of a bridge's `to: [{ postgres: ... }]` (docs/reference/sinks/postgres.md). */
export type PostgresSinkConfig = z.input<typeof postgresSink.schema>;
/** The options of `postgresDatabase`: the connection settings every Postgres component takes (`url`, or `host` with `database` and `user`; `password`, `ssl`, `poolSize`, timeouts). */
export type PostgresDatabaseConfig = z.input<ReturnType<typeof postgresDatabaseSchema>>;

/**
 * Messages from an outbox table, read in id order with `FOR UPDATE SKIP LOCKED` (several
 * readers share one outbox without taking a row twice) and woken by LISTEN/NOTIFY. A row is
 * deleted (or marked) in the transaction that read it, which commits once every message of
 * its batch was acked; a nacked row is read again. Unsubscribing commits what was acked
 * within `stopTimeoutMs` (`options.afterStop` receives that work) and leaves the rest.
 */
export function fromPostgres(config: PostgresSourceConfig, options?: StreamOptions): Source {
  return sourceOf(postgresSource, config, options);
}

/**
 * An operator inserting each delivery as a row (columns from templates such as `${id}` or
 * `${payload.celsius}`), one statement per batch, acked after the commit; a row that cannot
 * fit its column is nacked alone, not retryable.
 */
export function toPostgres(config: PostgresSinkConfig, options?: StreamOptions): Sink {
  return sinkOf(postgresSink, config, options);
}

/**
 * A typed Kysely instance over PostgreSQL, on the process's pool for these settings (the one
 * `toPostgres` and `fromPostgres` use when their settings and options are the same).
 * `destroy()` gives its share of the pool back; the last share closes it. Connections are named
 * in `pg_stat_activity` as theirs are: after the logger, `ferry:<options.name>` (`ferry:library`
 * unless given), or the `name` of the pino logger you pass. The password is never logged.
 *
 * ```ts
 * interface DB { readings: { device: string; celsius: number } }
 * const db = postgresDatabase<DB>({ url: 'postgres://ferry@localhost/plant' });
 * const rows = await db.selectFrom('readings').selectAll().where('device', '=', 'sensor-1').execute();
 * await db.destroy();
 * ```
 */
export function postgresDatabase<DB>(config: PostgresDatabaseConfig, options: StreamOptions = {}): Kysely<DB> {
  const parsed = validated('postgres', postgresDatabaseSchema(), config);
  const ctx = contextFor(options);
  const dialect = postgresDatabaseDialect(parsed, {
    applicationName: applicationName(ctx.logger),
    configDir: ctx.configDir ?? process.cwd(),
    component: `database of '${ctx.bridge}'`,
    metricLabel: ctx.bridge,
    counters: ctx.counters,
    logger: ctx.logger,
  });
  return new Kysely<DB>({ dialect });
}

/**
 * `application_name` of the connections, as the postgres sink and source name theirs: it is
 * part of the pool's key, so a different one here would keep `postgresDatabase` off their pool.
 */
function applicationName(logger: Logger): string {
  const name = (logger.bindings() as { name?: unknown }).name;
  return typeof name === 'string' && name !== '' ? name : 'ferry';
}
