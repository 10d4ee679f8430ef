import { type Dialect, PostgresDialect, type PostgresPool } from 'kysely';
import { z } from 'zod';
import { type PoolSettings, connectionFields, refineConnection } from './connection.ts';
import type { PostgresPools } from './pools.ts';

/** A PostgreSQL database for handlers and `ferry migrate`: the connection settings every Postgres component takes. */
export const postgresDatabaseSchema = z
  .strictObject(connectionFields)
  .superRefine((config, ctx) => refineConnection(config, ctx))
  .meta({
    description:
      'A PostgreSQL database: the connection settings of the postgres sink and source (`url`, or `host` with `database` and `user`; `password`, `ssl`, `poolSize`, timeouts).',
  });

export type PostgresDatabaseConfig = z.output<typeof postgresDatabaseSchema>;

/**
 * A Kysely dialect over a share of the process's pool for `settings`: the pool a sink or a
 * source with the same settings uses. Kysely's `destroy()` gives the share back (the last
 * share closes the pool); it never ends a pool others still use.
 */
export function postgresDialect(settings: PoolSettings, pools: PostgresPools, onIdleError: (error: Error) => void): Dialect {
  const lease = pools.acquire(settings, onIdleError);
  const pool = async (): Promise<PostgresPool> => {
    const shared = await lease.pool;
    return {
      connect: () => shared.connect() as unknown as ReturnType<PostgresPool['connect']>,
      end: () => lease.release(),
      options: {},
    };
  };
  return new PostgresDialect({ pool });
}
