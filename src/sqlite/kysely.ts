import { CompiledQuery, type DatabaseConnection, type DialectAdapter, type Driver, type Kysely, SqliteAdapter, SqliteDialect, SqliteDriver, sql } from 'kysely';
import { openSqlite } from './connection.ts';
import { type SqliteDatabaseConfig, sqliteDatabasePath } from './database-schema.ts';

/** How long `ferry migrate` waits for another process migrating the same file. */
const MIGRATION_LOCK_WAIT_MS = 10 * 60_000;

/**
 * Kysely's SQLite dialect with two changes. Transactions begin IMMEDIATE: a writer takes the
 * write lock at BEGIN and waits there (busy timeout) for another process's, instead of failing
 * with SQLITE_BUSY when it upgrades a stale read (WAL). And migrations run in one transaction
 * each run (SQLite's DDL is transactional), which makes that lock Kysely's migration lock: two
 * processes migrating one file take turns, and the second finds the migrations applied.
 */
class FerrySqliteDialect extends SqliteDialect {
  override createDriver(): Driver {
    return new ImmediateSqliteDriver(this.config);
  }

  override createAdapter(): DialectAdapter {
    return new MigratingSqliteAdapter(this.#busyTimeoutMs);
  }

  readonly config: ConstructorParameters<typeof SqliteDriver>[0];
  readonly #busyTimeoutMs: number;

  constructor(config: ConstructorParameters<typeof SqliteDialect>[0], busyTimeoutMs: number) {
    super(config);
    this.config = config;
    this.#busyTimeoutMs = busyTimeoutMs;
  }
}

class ImmediateSqliteDriver extends SqliteDriver {
  override async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('begin immediate'));
  }
}

class MigratingSqliteAdapter extends SqliteAdapter {
  readonly #busyTimeoutMs: number;

  constructor(busyTimeoutMs: number) {
    super();
    this.#busyTimeoutMs = busyTimeoutMs;
  }

  override get supportsTransactionalDdl(): boolean {
    return true;
  }

  override async acquireMigrationLock(db: Kysely<unknown>): Promise<void> {
    // The lock itself is the transaction's BEGIN IMMEDIATE, right after this: wait long for it.
    await sql.raw(`PRAGMA busy_timeout = ${MIGRATION_LOCK_WAIT_MS}`).execute(db);
  }

  // The connection is the database's only one and stays open after a Migrator run on a library
  // instance: left at the migration's wait, a later write would wait ten minutes for a lock
  // instead of the configured `busyTimeoutMs`.
  override async releaseMigrationLock(db: Kysely<unknown>): Promise<void> {
    await sql.raw(`PRAGMA busy_timeout = ${this.#busyTimeoutMs}`).execute(db);
  }
}

/** A Kysely dialect over the file, opened in WAL mode on the first query; Kysely's `destroy()` closes it. */
export function sqliteDialect(config: SqliteDatabaseConfig, dataDir: string): SqliteDialect {
  const path = sqliteDatabasePath(config, dataDir);
  return new FerrySqliteDialect({ database: async () => openSqlite(path, { synchronous: config.synchronous, busyTimeoutMs: config.busyTimeoutMs }) }, config.busyTimeoutMs);
}
