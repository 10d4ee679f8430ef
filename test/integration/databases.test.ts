// The databases of gateway.yaml that handlers get from tools.database: typed Kysely instances over
// the real PostgreSQL server (sharing the process's pools with sinks) and over a SQLite file in
// WAL mode; closed on shutdown, and on a reload that drops or changes them.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { sql } from 'kysely';
import pino from 'pino';
import { databasesSchema } from '../../src/config/databases-schema.ts';
import { isFerryError } from '../../src/core/errors.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { PostgresPools } from '../../src/postgres/pools.ts';
import { Databases } from '../../src/runtime/databases.ts';
import { testSchema } from '../harness/pg-schema.ts';
import { randomName } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-databases-');

interface Tables {
  notes: { id: number; body: string };
}

async function databases(config: unknown, pools = new PostgresPools(), dataDir = tempDir()) {
  const applicationName = randomName('gw-');
  const dbs = new Databases(databasesSchema().parse(config), {
    logger: pino({ level: 'silent' }),
    counters: new CounterRegistry(),
    configDir: dataDir,
    dataDir,
    applicationName,
    pools,
  });
  await dbs.load();
  return { applicationName, pools, dataDir, dbs };
}

test('a postgres database: a typed Kysely instance on a shared pool named after the gateway, closed with close()', async (t) => {
  const pg = await testSchema(t);
  await pg.query(`CREATE TABLE ${pg.name}.notes (id int PRIMARY KEY, body text NOT NULL)`);
  const { dbs, pools, applicationName } = await databases({ main: { postgres: { url: pg.url } } });
  const db = dbs.get<Tables>('main').withSchema(pg.name);
  assert.equal(dbs.get('main'), dbs.get('main'), 'one instance per database');
  await db
    .insertInto('notes')
    .values([
      { id: 1, body: 'one' },
      { id: 2, body: "it's two" },
    ])
    .execute();
  const rows = await db.selectFrom('notes').select(['id', 'body']).orderBy('id').execute();
  assert.deepEqual(rows, [
    { id: 1, body: 'one' },
    { id: 2, body: "it's two" },
  ]);
  assert.equal(pools.size, 1);
  const sessions = await pg.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1', [applicationName]);
  assert.ok((sessions[0]?.n ?? 0) >= 1, 'a connection named after the gateway');
  await dbs.close();
  assert.equal(pools.size, 0, 'the pool closed');
});

test('a sqlite database: a file under the data directory in WAL mode, typed queries, closed with close()', async () => {
  const { dbs, dataDir } = await databases({ local: { sqlite: { file: 'state/app.db' } } });
  const db = dbs.get<Tables>('local');
  await db.schema
    .createTable('notes')
    .addColumn('id', 'integer', (c) => c.primaryKey())
    .addColumn('body', 'text', (c) => c.notNull())
    .execute();
  await db.insertInto('notes').values({ id: 7, body: 'seven' }).execute();
  assert.deepEqual(await db.selectFrom('notes').selectAll().execute(), [{ id: 7, body: 'seven' }]);
  const mode = await sql<{ journal_mode: string }>`PRAGMA journal_mode`.execute(db);
  assert.equal(mode.rows[0]?.journal_mode, 'wal');
  assert.ok(existsSync(join(dataDir, 'state/app.db')));
  await dbs.close();
  await assert.rejects(db.selectFrom('notes').selectAll().execute(), 'a closed database refuses queries');
});

test('a reload: a dropped or changed database is closed once the old bridges stopped, an unchanged one is kept; revert puts things back', async (t) => {
  const pg = await testSchema(t);
  const { dbs, pools } = await databases({ main: { postgres: { url: pg.url } }, local: { sqlite: { file: 'a.db' } }, spare: { sqlite: { file: 'b.db' } } });
  const main = dbs.get('main');
  const local = dbs.get('local');
  const spare = dbs.get('spare');
  await sql`SELECT 1`.execute(main);
  await sql`SELECT 1`.execute(spare);

  const refused = dbs.change(databasesSchema().parse({ local: { sqlite: { file: 'a.db' } } }));
  await refused.revert();
  assert.equal(dbs.get('main'), main, 'a refused reload keeps the running instances');

  let stopped = () => {};
  const change = dbs.change(databasesSchema().parse({ local: { sqlite: { file: 'a.db' } }, spare: { sqlite: { file: 'c.db' } } }));
  const closed = change.commit(new Promise<void>((resolve) => (stopped = resolve)));
  assert.equal(dbs.get('local'), local, 'unchanged: kept');
  assert.notEqual(dbs.get('spare'), spare, 'changed: a new instance for new users');
  await sql`SELECT 1`.execute(spare); // the old bridges still run: the old instance still works
  assert.equal(pools.size, 1);
  stopped();
  assert.deepEqual((await closed).sort(), ['main', 'spare']);
  assert.equal(pools.size, 0, 'the dropped database closed its pool');
  await assert.rejects(sql`SELECT 1`.execute(spare));
  assert.throws(
    () => dbs.get('main'),
    (error: unknown) => isFerryError(error, 'CONFIG_INVALID') && /no database 'main'.*local, spare/.test(error.message),
  );
  await dbs.close();
});

test('config: names and kinds are checked', () => {
  assert.equal(databasesSchema().safeParse({ 'bad name': { sqlite: { file: 'x.db' } } }).success, false);
  assert.equal(databasesSchema().safeParse({ main: { mysql: { url: 'x' } } }).success, false);
  assert.equal(databasesSchema().safeParse({ main: { postgres: { url: 'postgres://u@h/d', host: 'h' } } }).success, false);
  assert.deepEqual(databasesSchema().parse(undefined), {});
});
