// A network cut off while a handler's transaction (through tools.database) is open: the client
// gives the connection up (its reply timeout), while the server, never told, keeps the session
// and the transaction, with the locks of the rows it wrote. The handler's retry of the same
// upsert then waited for those locks until its statement timeout, again at every retry, for as
// long as the server kept the transaction: until its TCP noticed (hours). The sessions of a
// database now end a transaction idle for statementTimeoutMs plus connectTimeoutMs.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { type TestContext, test } from 'node:test';
import { sql } from 'kysely';
import pino from 'pino';
import { databasesSchema } from '../../src/config/databases-schema.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { PostgresPools } from '../../src/postgres/pools.ts';
import { Databases } from '../../src/runtime/databases.ts';
import { partitionProxy } from '../harness/partition-proxy.ts';
import { type TestSchema, testSchema } from '../harness/pg-schema.ts';
import { randomName } from '../harness/services.ts';

interface Tables {
  state: { key: string; value: number };
}

/** The database `main` a handler gets from tools.database, at `url`, with short timeouts: a transaction idle for 1.5 s is ended. */
async function database(t: TestContext, pg: TestSchema, url: string) {
  const applicationName = randomName('gw-');
  const dbs = new Databases(databasesSchema().parse({ main: { postgres: { url, statementTimeoutMs: 1000, connectTimeoutMs: 500 } } }), {
    logger: pino({ level: 'silent' }),
    counters: new CounterRegistry(),
    configDir: '.',
    dataDir: '.',
    applicationName,
    pools: new PostgresPools(),
  });
  await dbs.load();
  t.after(() => dbs.close());
  await pg.query(`CREATE TABLE ${pg.name}.state (key text PRIMARY KEY, value int NOT NULL)`);
  const db = dbs.get<Tables>('main').withSchema(pg.name);
  const upsert = (on: typeof db, value: number) =>
    on
      .insertInto('state')
      .values({ key: 'k', value })
      .onConflict((oc) => oc.column('key').doUpdateSet({ value }))
      .execute();
  /** The server's sessions of this database left in a transaction that wrote something. */
  const orphans = () => pg.query(`SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND state = 'idle in transaction' AND backend_xid IS NOT NULL`, [applicationName]);
  return { db, upsert, orphans };
}

test("tools.database: a network cut off under a handler's transaction does not keep its rows locked; the server ends the transaction, and the handler's retry of the same upsert commits", {
  timeout: 40_000,
}, async (t) => {
  const pg = await testSchema(t);
  const proxy = await partitionProxy({ host: new URL(pg.url).hostname, port: Number(new URL(pg.url).port || 5432) });
  t.after(() => proxy.close());
  const url = new URL(pg.url);
  url.host = `127.0.0.1:${proxy.port}`;
  const { db, upsert, orphans } = await database(t, pg, url.toString());

  // The first upsert is written and holds the row's lock; the path is cut before the next statement.
  const cut = db.transaction().execute(async (trx) => {
    await upsert(trx, 1);
    proxy.partition();
    await upsert(trx, 2);
  });
  await assert.rejects(cut, /Query read timeout/, 'the statement after the cut fails when its reply is late');
  const cutAt = Date.now();

  // As a handler does: the write is retried with a backoff until it commits.
  const errors: string[] = [];
  for (;;) {
    try {
      await db.transaction().execute((trx) => upsert(trx, 3));
      break;
    } catch (error) {
      errors.push(String((error as Error).message));
      assert.ok(Date.now() - cutAt < 10_000, `the retry still fails 10 s after the cut: ${errors.join('; ')}`);
      await sleep(250);
    }
  }
  // Old code: every retry waited for the row's lock until statement_timeout (57014).
  assert.deepEqual(await orphans(), [], 'the transaction left behind was ended');
  assert.deepEqual(await pg.query(`SELECT key, value FROM ${pg.name}.state`), [{ key: 'k', value: 3 }]);
});

test('tools.database: a transaction that keeps running statements is not ended however long it lasts; one idle longer than the timeout in the handler is ended, and its next statement fails', {
  timeout: 40_000,
}, async (t) => {
  const pg = await testSchema(t);
  const { db, upsert, orphans } = await database(t, pg, pg.url);

  // Ten statements of 0.3 s: 3 s in all, twice the idle timeout, none of it idle.
  await db.transaction().execute(async (trx) => {
    await upsert(trx, 1);
    for (let i = 0; i < 10; i++) await sql`SELECT pg_sleep(0.3)`.execute(trx);
    await upsert(trx, 2);
  });
  assert.deepEqual(await pg.query(`SELECT value FROM ${pg.name}.state`), [{ value: 2 }]);

  // A connection idle outside a transaction is kept.
  const backend = async () => (await sql<{ pid: number }>`SELECT pg_backend_pid() AS pid`.execute(db)).rows[0]?.pid;
  const before = await backend();
  await sleep(2000);
  assert.equal(await backend(), before);
  await upsert(db, 3);

  // A pause of 2.5 s inside the transaction, in the handler's code: the server ends it.
  const paused = db.transaction().execute(async (trx) => {
    await upsert(trx, 4);
    await sleep(2500);
    await upsert(trx, 5);
  });
  // pg's error for a session the server ended (its FATAL 25P03 came while the session was idle).
  await assert.rejects(paused, /Client has encountered a connection error and is not queryable/);
  assert.deepEqual(await pg.query(`SELECT value FROM ${pg.name}.state`), [{ value: 3 }], 'nothing of the ended transaction was written');
  assert.deepEqual(await orphans(), []);
  await upsert(db, 6);
  assert.deepEqual(await pg.query(`SELECT value FROM ${pg.name}.state`), [{ value: 6 }], 'the next statement runs on a connection of its own');
});
