// `ferry migrate up` on PostgreSQL while another session holds a lock a migration needs (a
// gateway's or a user's open transaction on the table it alters): stderr says who holds it and
// how to go on while it waits, the run completes once the lock is let go, and --lock-timeout
// bounds the wait with an error that says what happened.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import pg from 'pg';
import { eventually } from '../harness/eventually.ts';
import { ferry, spawnFerryGroup } from '../harness/ferry-process.ts';
import { testDatabase } from '../harness/pg-schema.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-issue13-lock-wait-');

const ALTER = `import { sql, type Kysely } from 'kysely';
export async function up(db: Kysely<any>) { await sql\`ALTER TABLE devices ADD COLUMN site text\`.execute(db); }
export async function down(db: Kysely<any>) { await sql\`ALTER TABLE devices DROP COLUMN site\`.execute(db); }
`;

/** A database with a `devices` table, a migration that alters it, and a session of another application that holds a transaction open on it. */
async function setUp(t: test.TestContext) {
  const db = await testDatabase(t);
  await db.query('CREATE TABLE devices (id int PRIMARY KEY)');
  const root = tempDir();
  const dir = join(root, 'migrations');
  mkdirSync(dir);
  writeFileSync(join(dir, '20260101_000100_add_site.ts'), ALTER);
  mkdirSync(join(root, 'config'));
  const config = join(root, 'config', 'gateway.yaml');
  writeFileSync(config, `gateway: {name: site-7, dataDir: ../data}\nbridges: []\ndevices: []\ndatabases:\n  main:\n    postgres: {url: '${db.url}'}\n`);
  const holder = new pg.Client({ connectionString: db.url, application_name: 'nightly report' });
  holder.on('error', () => {}); // ended by the database's drop when the test ends
  await holder.connect();
  t.after(() => holder.end());
  // A read in a transaction left open: its ACCESS SHARE lock conflicts with the ALTER's ACCESS EXCLUSIVE.
  await holder.query('BEGIN');
  await holder.query('SELECT count(*) FROM devices');
  const pid = (await holder.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid;
  assert.ok(pid !== undefined);
  const columns = async () => (await db.query<{ c: string }>("SELECT column_name AS c FROM information_schema.columns WHERE table_name = 'devices' ORDER BY 1")).map((r) => r.c);
  return { db, holder, pid, columns, args: ['migrate', 'up', '--config', config, '--dir', dir] };
}

test('ferry migrate up on PostgreSQL: waiting for a lock another session holds, stderr names that session and how to go on; the run completes once it is let go', {
  timeout: 120_000,
}, async (t) => {
  const { db, holder, pid, columns, args } = await setUp(t);
  const run = spawnFerryGroup(args);
  t.after(() => run.stop());
  const exited = new Promise<number | null>((resolve) => run.child.once('exit', resolve));

  // The migration waits for the lock (seen from the server), and says so.
  await eventually(
    async () =>
      assert.equal(
        (await db.query("SELECT 1 FROM pg_stat_activity WHERE application_name = 'site-7 (ferry migrate)' AND wait_event_type = 'Lock' AND query LIKE 'ALTER TABLE devices%'"))
          .length,
        1,
      ),
    { timeoutMs: 30_000 },
  );
  await eventually(() => assert.match(run.stderr(), /waiting \d+ s for AccessExclusiveLock on devices, held up by:\n/), { timeoutMs: 30_000 });
  const stderr = run.stderr();
  assert.match(stderr, new RegExp(`\\n  pid ${pid} 'nightly report' \\(user \\w+\\), idle in transaction, its transaction open for \\d+ s: SELECT pg_backend_pid\\(\\) AS pid\\n`));
  assert.match(stderr, new RegExp(`SELECT pg_terminate_backend\\(${pid}\\)\\).*Ctrl-C stops it and leaves the database as it was`));
  assert.equal(run.child.exitCode, null, 'still waiting');
  assert.deepEqual(await columns(), ['id']);

  await holder.query('ROLLBACK');
  assert.equal(await exited, 0, run.stderr());
  assert.match(run.stdout(), /applied\s+20260101_000100_add_site\n.*1 migration applied/);
  assert.deepEqual(await columns(), ['id', 'site']);
});

test('ferry migrate up on PostgreSQL: --lock-timeout fails the run when the lock is held longer, says why, and leaves the database as it was', {
  timeout: 120_000,
}, async (t) => {
  const { holder, columns, args } = await setUp(t);
  const run = await ferry([...args, '--lock-timeout', '500']);
  assert.equal(run.code, 1, run.stderr);
  assert.match(run.stdout, /FAILED\s+20260101_000100_add_site/);
  assert.match(
    run.stderr,
    /migration 20260101_000100_add_site failed: canceling statement due to lock timeout; database 'main' is as it was before this run: another session held a lock it needed longer than --lock-timeout \(500 ms\)/,
  );
  assert.deepEqual(await columns(), ['id']);

  await holder.query('ROLLBACK');
  const again = await ferry([...args, '--lock-timeout', '500']);
  assert.equal(again.code, 0, again.stderr);
  assert.deepEqual(await columns(), ['id', 'site']);
});

test('ferry migrate up on PostgreSQL: Ctrl-C while it waits for a lock ends its session at once, so that no statement of it stays queued for the lock; the database is as it was', {
  timeout: 120_000,
}, async (t) => {
  const { db, holder, columns, args } = await setUp(t);
  const run = spawnFerryGroup(args);
  t.after(() => run.stop());
  const exited = new Promise<number | null>((resolve) => run.child.once('exit', resolve));
  await eventually(() => assert.match(run.stderr(), /waiting \d+ s for AccessExclusiveLock on devices/), { timeoutMs: 30_000 });

  process.kill(run.child.pid as number, 'SIGINT');
  assert.equal(await exited, 1, run.stderr());
  assert.match(run.stderr(), /ferry migrate up: stopped \(Ctrl-C or SIGTERM\); database 'main' is as it was before this run\n/);
  // While the lock is still held: a backend left waiting for it would hold up every session
  // queued behind it, and take the lock (then roll back) only once it was let go.
  await eventually(async () => assert.deepEqual(await db.query("SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'site-7 (ferry migrate%'"), []), {
    timeoutMs: 10_000,
  });
  await holder.query('ROLLBACK');
  assert.deepEqual(await columns(), ['id']);
  assert.deepEqual(await db.query('SELECT * FROM kysely_migration'), []);
});
