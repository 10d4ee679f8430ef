import { existsSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { type Kysely, sql } from 'kysely';
import { type MigrationResultSet, Migrator } from 'kysely/migration';
import pino from 'pino';
import type { DatabaseConfig } from '../config/databases-schema.ts';
import { MigrationFiles, migrationTemplate } from '../config/migration-files.ts';
import { describeError } from '../core/errors.ts';
import { CounterRegistry } from '../observability/counters.ts';
import { Databases } from '../runtime/databases.ts';
import { loadSettings } from './load.ts';
import { makeDirectory } from '../runtime/make-directory.ts';
import { poolSettings } from '../postgres/connection.ts';
import { sqlState } from '../postgres/errors.ts';
import { openWatchSession, watchLockWaits } from '../postgres/lock-waits.ts';

export interface MigrateOptions {
  readonly config: string;
  readonly database?: string;
  readonly dir: string;
  /** PostgreSQL's `lock_timeout` for the run, in ms: a statement waiting longer for a lock fails the run. */
  readonly lockTimeout?: number;
}

/** Exit codes a deploy script can tell apart. */
export const MIGRATE_EXIT = {
  ok: 0,
  /** A migration failed, a database cannot be reached, a file cannot be loaded. */
  failed: 1,
  /** `status`: migrations are waiting to be applied. */
  pending: 2,
  /** The config or the command line is wrong (no such database, no migrations directory). */
  usage: 3,
} as const;

type Action = 'up' | 'down' | 'status';

/** `ferry migrate up|down|status`: Kysely's Migrator over a database of gateway.yaml. */
export async function migrateCommand(action: Action, options: MigrateOptions): Promise<void> {
  process.exitCode = await migrate(action, options);
}

async function migrate(action: Action, options: MigrateOptions): Promise<number> {
  const config = loadSettings(options.config);
  if (config === undefined) return MIGRATE_EXIT.usage;
  const names = Object.keys(config.databases);
  const name = options.database ?? (names.length === 1 ? names[0] : undefined);
  if (name === undefined || config.databases[name] === undefined) {
    process.stderr.write(
      names.length === 0
        ? `ferry migrate: ${options.config} declares no databases: add one under \`databases:\` (see docs/postgres.md)\n`
        : `ferry migrate: ${options.database === undefined ? 'pass --database NAME' : `no database '${options.database}'`}; ${options.config} declares ${names.join(', ')}\n`,
    );
    return MIGRATE_EXIT.usage;
  }
  const database = config.databases[name];
  if (options.lockTimeout !== undefined && !('postgres' in database)) {
    process.stderr.write(`ferry migrate: --lock-timeout is for PostgreSQL; database '${name}' is SQLite\n`);
    return MIGRATE_EXIT.usage;
  }
  const dir = resolve(options.dir);
  const files = new MigrationFiles(dir);
  try {
    files.names();
  } catch (error) {
    process.stderr.write(`ferry migrate: ${describeError(error)}\n`);
    return MIGRATE_EXIT.usage;
  }
  const databases = new Databases(withoutStatementTimeout(config.databases), {
    logger: pino({ level: 'silent' }),
    counters: new CounterRegistry(),
    configDir: dirname(config.file),
    dataDir: config.dataDirPath,
    applicationName: `${config.gateway.name} (ferry migrate)`,
  });
  try {
    await databases.load();
    const db = databases.get<unknown>(name);
    const target = `database '${name}'`;
    if (action === 'status') return await status(new Migrator({ db, provider: files }), target);
    const run = (session: Kysely<unknown>) => {
      const migrator = new Migrator({ db: session, provider: files });
      return action === 'up' ? migrator.migrateToLatest() : migrator.migrateDown();
    };
    if (!('postgres' in database)) return report(await run(db), action, target);
    const watcher = poolSettings(database.postgres, `${config.gateway.name} (ferry migrate, lock watch)`, dirname(config.file), target);
    const result = await db.connection().execute((session) => watched(session, run, () => openWatchSession(watcher), options.lockTimeout));
    return report(result, action, target, options.lockTimeout);
  } catch (error) {
    process.stderr.write(`ferry migrate: ${describeError(error)}\n`);
    return MIGRATE_EXIT.failed;
  } finally {
    await databases.close();
  }
}

/**
 * Runs the migrations on one PostgreSQL session, under `lockTimeoutMs`, watched from another:
 * while a statement waits for a lock held by some other session (a gateway's or a user's open
 * transaction on the table an ALTER changes), stderr says which sessions, and how to go on,
 * instead of nothing for as long as they keep it. Ctrl-C (or SIGTERM) ends the migrating
 * session from the watching one, so that the run is rolled back now, and no statement of it
 * stays queued for its lock, holding up the sessions behind it, after the process is gone.
 */
async function watched(
  session: Kysely<unknown>,
  run: (session: Kysely<unknown>) => Promise<MigrationResultSet>,
  open: () => ReturnType<typeof openWatchSession>,
  lockTimeoutMs?: number,
): Promise<MigrationResultSet> {
  if (lockTimeoutMs !== undefined) await sql`SET lock_timeout = ${sql.lit(lockTimeoutMs)}`.execute(session);
  const { rows } = await sql<{ pid: number }>`SELECT pg_backend_pid() AS pid`.execute(session);
  const watch = watchLockWaits({ open, pid: (rows[0] as { pid: number }).pid, report: (text) => process.stderr.write(text) });
  let interrupted = false;
  const interrupt = () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    process.stderr.write('ferry migrate: stopping: ending the migrating session, which rolls the run back (press Ctrl-C again to exit at once)\n');
    void watch.terminate().then((ended) => ended || process.exit(130));
  };
  process.on('SIGINT', interrupt).on('SIGTERM', interrupt);
  try {
    const result = await run(session);
    // What failed then is the session ended here, whatever pg says of it ("connection discarded").
    return interrupted && result.error !== undefined ? { ...result, error: new Error('stopped (Ctrl-C or SIGTERM)') } : result;
  } finally {
    process.off('SIGINT', interrupt).off('SIGTERM', interrupt);
    await watch.stop();
  }
}

/**
 * The databases with no statement timeout on PostgreSQL (`statementTimeoutMs: 0`, see
 * poolSettings): a migration may build an index on a large table for minutes, and a second
 * `migrate up` waits for the first's lock as long as that one runs. A migration that wants a
 * bound sets it itself (`SET LOCAL statement_timeout`, for the rest of the run's transaction).
 */
function withoutStatementTimeout(databases: Readonly<Record<string, DatabaseConfig>>): Record<string, DatabaseConfig> {
  return Object.fromEntries(
    Object.entries(databases).map(([name, database]) => [name, 'postgres' in database ? { postgres: { ...database.postgres, statementTimeoutMs: 0 } } : database]),
  );
}

async function status(migrator: Migrator, target: string): Promise<number> {
  const migrations = await migrator.getMigrations();
  const pending = migrations.filter((m) => m.executedAt === undefined).length;
  for (const m of migrations) process.stdout.write(`${m.executedAt === undefined ? 'pending ' : `applied  ${m.executedAt.toISOString()}`}  ${m.name}\n`);
  process.stdout.write(
    `${target}: ${migrations.length - pending} of ${migrations.length} migration${migrations.length === 1 ? '' : 's'} applied${pending === 0 ? '' : `, ${pending} pending (run \`ferry migrate up\`)`}\n`,
  );
  return pending === 0 ? MIGRATE_EXIT.ok : MIGRATE_EXIT.pending;
}

/**
 * Prints what a run did. Each run is one transaction on both PostgreSQL and SQLite (their DDL
 * is transactional): when a migration fails, the ones before it in the same run are rolled
 * back with it, and the database is as it was before the command.
 */
function report({ error, results = [] }: MigrationResultSet, action: 'up' | 'down', target: string, lockTimeoutMs?: number): number {
  if (error !== undefined) {
    const failed = results.find((r) => r.status === 'Error')?.migrationName;
    for (const r of results)
      process.stdout.write(`${r.status === 'Error' ? 'FAILED     ' : r.status === 'Success' ? 'rolled back' : 'not run    '}  ${r.migrationName}
`);
    process.stderr.write(
      `ferry migrate ${action}: ${failed === undefined ? '' : `migration ${failed} failed: `}${describeError(error)}; ${target} is as it was before this run${
        sqlState(error) === '55P03' && lockTimeoutMs !== undefined
          ? `: another session held a lock it needed longer than --lock-timeout (${lockTimeoutMs} ms); run it again once that session is done, or with a longer --lock-timeout`
          : ''
      }\n`,
    );
    return MIGRATE_EXIT.failed;
  }
  for (const r of results) process.stdout.write(`${r.direction === 'Up' ? 'applied ' : 'reverted'}  ${r.migrationName}\n`);
  const done = results.length;
  if (done === 0) process.stdout.write(action === 'up' ? `${target}: up to date, nothing to apply\n` : `${target}: no migration to revert\n`);
  else process.stdout.write(`${target}: ${done} migration${done === 1 ? '' : 's'} ${action === 'up' ? 'applied' : 'reverted'}\n`);
  return MIGRATE_EXIT.ok;
}

/** `ferry migrate create NAME`: a new migration file named after the time, so that files sort in the order they were made. */
export function createMigrationCommand(name: string, options: Pick<MigrateOptions, 'dir'>): void {
  if (!/^[a-z0-9][a-z0-9_-]{0,80}$/i.test(name)) {
    process.stderr.write(`ferry migrate create: '${name}' is not a migration name: use letters, digits, "_" and "-" (create_devices)\n`);
    process.exitCode = MIGRATE_EXIT.usage;
    return;
  }
  const dir = resolve(options.dir);
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '_').slice(0, 15);
  const file = join(dir, `${stamp}_${name}.ts`);
  if (existsSync(file)) {
    process.stderr.write(`ferry migrate create: ${file} exists already\n`);
    process.exitCode = MIGRATE_EXIT.usage;
    return;
  }
  try {
    makeDirectory(dir);
  } catch (error) {
    process.stderr.write(`ferry migrate create: ${describeError(error)}\n`);
    process.exitCode = MIGRATE_EXIT.usage;
    return;
  }
  writeFileSync(file, migrationTemplate(`${stamp}_${name}`), { flag: 'wx' });
  process.stdout.write(`${file}\n`);
}
