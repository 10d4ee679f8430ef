// What `ferry migrate` prints about the sessions a migration waits for, read by a role that may
// not see other roles' activity (no pg_read_all_stats, as a deploy role usually is): the server
// hides their state and statement, and shows `<insufficient privilege>` as the statement. The
// lines must say that it is hidden, not print that text as the session's last statement.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pg from 'pg';
import { describeLockWait, lockWaitOf } from '../../src/postgres/lock-waits.ts';
import { eventually } from '../harness/eventually.ts';
import { randomName, requireService } from '../harness/services.ts';

test('a lock wait on sessions of another role, seen without pg_read_all_stats, names them and says their statement is hidden', { timeout: 60_000 }, async (t) => {
  const server = await requireService('pg');
  const database = randomName('ferry_t_');
  const role = randomName('ferry_t_role_');
  const admin = new pg.Client({ connectionString: server });
  await admin.connect();
  const clients: pg.Client[] = [];
  t.after(async () => {
    for (const client of clients) await client.end().catch(() => {});
    await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`).catch(() => {});
    await admin.query(`DROP ROLE IF EXISTS ${role}`).catch(() => {});
    await admin.end();
  });
  await admin.query(`CREATE ROLE ${role} LOGIN`);
  await admin.query(`CREATE DATABASE ${database}`);
  const url = (user?: string) => {
    const u = new URL(server);
    u.pathname = `/${database}`;
    if (user !== undefined) u.username = user;
    return u.href;
  };
  const connect = async (user: string | undefined, applicationName: string) => {
    const client = new pg.Client({ connectionString: url(user), application_name: applicationName });
    client.on('error', () => {}); // ended by the database's drop when the test ends
    clients.push(client);
    await client.connect();
    return client;
  };

  // The table is the deploy role's; a session of another role (the server's admin) reads it in a transaction left open.
  const holder = await connect(undefined, 'nightly report');
  await holder.query('CREATE TABLE devices (id int PRIMARY KEY)');
  await holder.query(`ALTER TABLE devices OWNER TO ${role}`);
  const holderPid = (await holder.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid;
  await holder.query('BEGIN');
  await holder.query('SELECT count(*) FROM devices');

  // The deploy role's migration waits for it; a second session of that role watches.
  const migrating = await connect(role, 'site-7 (ferry migrate)');
  const migratingPid = (await migrating.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid as number;
  const altered = migrating.query('ALTER TABLE devices ADD COLUMN site text');
  altered.catch(() => {});
  const watcher = await connect(role, 'site-7 (ferry migrate, lock watch)');
  const visible = (await watcher.query<{ query: string | null; state: string | null }>('SELECT query, state FROM pg_stat_activity WHERE pid = $1', [holderPid])).rows[0];
  assert.deepEqual(visible, { query: '<insufficient privilege>', state: null }, "the watching role does not see the other role's activity");

  const wait = await eventually(async () => {
    const found = await lockWaitOf(watcher, migratingPid);
    assert.ok(found !== undefined, 'the migration waits for a lock');
    return found;
  });
  assert.equal(wait.lock, 'AccessExclusiveLock on devices');
  const text = describeLockWait(wait, 4000);
  assert.match(
    text,
    new RegExp(`\\n  pid ${holderPid} 'nightly report' \\(user \\w+\\), its state and statement hidden from this role \\(a role with pg_read_all_stats sees them\\)\\n`),
  );
  assert.doesNotMatch(text, /insufficient privilege/, 'the placeholder is not shown as the statement');

  await holder.query('ROLLBACK');
  await altered;
});
