// Kysely's Migrator on a SQLite database of Ferry's (a handler's `tools.database`, the library's
// `sqliteDatabase`): the migration waits long for another process's lock, and the connection,
// which stays open after the run, goes back to the configured busy timeout.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type Kysely, sql } from 'kysely';
import { Migrator } from 'kysely/migration';
import { sqliteDatabase } from '../../../src/lib/sqlite.ts';
import { tempDirs } from '../../harness/temp.ts';

const tempDir = tempDirs('ferry-sqlite-migrations-');

async function busyTimeout(db: Kysely<unknown>): Promise<number | undefined> {
  return (await sql<{ timeout: number }>`PRAGMA busy_timeout`.execute(db)).rows[0]?.timeout;
}

test('after a migration run, applied or rolled back, writes wait busyTimeoutMs for a lock again, not the migration lock wait', async () => {
  const db = sqliteDatabase<unknown>({ file: 'app.db', busyTimeoutMs: 250 }, { dir: tempDir() });
  try {
    assert.equal(await busyTimeout(db), 250);
    let waitedDuringRun: number | undefined;
    const applied = await new Migrator({
      db,
      provider: {
        getMigrations: async () => ({
          '001_notes': {
            up: async (trx) => {
              waitedDuringRun = await busyTimeout(trx);
              await trx.schema.createTable('notes').addColumn('id', 'integer').execute();
            },
          },
        }),
      },
    }).migrateToLatest();
    assert.equal(applied.error, undefined);
    assert.ok((waitedDuringRun ?? 0) >= 60_000, `the migration waits long for another process: ${waitedDuringRun}`);
    // Ten minutes here would hold the event loop that long at the first write meeting a lock.
    assert.equal(await busyTimeout(db), 250);

    const failed = await new Migrator({
      db,
      provider: {
        getMigrations: async () => ({
          '001_notes': { up: async () => {} },
          '002_broken': {
            up: async (trx) => {
              await sql`SELECT * FROM no_such_table`.execute(trx);
            },
          },
        }),
      },
    }).migrateToLatest();
    assert.ok(failed.error instanceof Error);
    assert.equal(await busyTimeout(db), 250);
  } finally {
    await db.destroy();
  }
});
