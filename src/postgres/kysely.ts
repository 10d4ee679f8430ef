import { type Dialect, PostgresDialect, type PostgresPool } from 'kysely';
import type { Logger } from 'pino';
import type { Counters } from '../core/component.ts';
import { type PoolSettings, poolSettings } from './connection.ts';
import type { PostgresDatabaseConfig } from './database-schema.ts';
import { type PostgresPools, processPools } from './pools.ts';

/**
 * A Kysely dialect over a share of the process's pool for `settings`: the pool a sink or a
 * source with the same settings uses. Kysely's `destroy()` gives the share back (the last
 * share closes the pool); it never ends a pool others still use.
 */
function postgresDialect(settings: PoolSettings, pools: PostgresPools, onIdleError: (error: Error) => void): Dialect {
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

export interface DatabaseDialectOptions {
  /** `application_name` of the connections. */
  readonly applicationName: string;
  /** Password and TLS files are relative to it. */
  readonly configDir: string;
  /** Names the database in errors and log lines, e.g. `database 'main'`. */
  readonly component: string;
  /** The `bridge` label of `postgres.pool.errors`. */
  readonly metricLabel: string;
  readonly counters: Counters;
  readonly logger: Logger;
  /** More fields for the line logged when an idle connection fails. */
  readonly logFields?: Readonly<Record<string, unknown>>;
  readonly pools?: PostgresPools;
}

/**
 * The dialect of a PostgreSQL database of handlers, `ferry migrate` and the library: its
 * settings checked (a password file, TLS files), a share of the process's pool, and an idle
 * connection's failure counted and logged.
 */
export function postgresDatabaseDialect(config: PostgresDatabaseConfig, options: DatabaseDialectOptions): Dialect {
  const settings = poolSettings(config, options.applicationName, options.configDir, options.component);
  return postgresDialect(settings, options.pools ?? processPools, (error) => {
    options.counters.count('postgres.pool.errors', { bridge: options.metricLabel });
    options.logger.warn({ err: error, ...options.logFields }, `${options.component}: an idle connection to ${settings.description} failed; the pool opens a new one when needed`);
  });
}
