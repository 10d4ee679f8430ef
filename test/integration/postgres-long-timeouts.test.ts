// The largest statementTimeoutMs the schema takes (2147483647 ms, 24.8 days) with the default
// connectTimeoutMs. pg's reply timeout (query_timeout) and the sink's and the outbox source's
// `SET LOCAL idle_in_transaction_session_timeout` were their sum, past 2^31 - 1: Node fired the
// reply timer after 1 ms (TimeoutOverflowWarning), so every statement failed with `Query read
// timeout`, and PostgreSQL refuses an integer setting past that range ("Value exceeds integer
// range"). Both are now held to 2^31 - 1 ms.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sql } from 'kysely';
import pino from 'pino';
import { Subject } from 'rxjs';
import { databasesSchema } from '../../src/config/databases-schema.ts';
import { type Delivery, createDelivery } from '../../src/core/delivery.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import { MAX_TIMER_MS } from '../../src/core/timer-limit.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { type PostgresSourceConfig, fromPostgres } from '../../src/lib/postgres.ts';
import { PostgresPools } from '../../src/postgres/pools.ts';
import { postgresSink } from '../../src/postgres/sink.ts';
import { Databases } from '../../src/runtime/databases.ts';
import { eventually } from '../harness/eventually.ts';
import { testSchema } from '../harness/pg-schema.ts';
import { randomName } from '../harness/services.ts';

const LONGEST = { statementTimeoutMs: MAX_TIMER_MS };

test('tools.database: the longest statementTimeoutMs runs statements and transactions, under idle_in_transaction_session_timeout 2147483647', { timeout: 20_000 }, async (t) => {
  const pg = await testSchema(t);
  const dbs = new Databases(databasesSchema().parse({ main: { postgres: { url: pg.url, ...LONGEST } } }), {
    logger: pino({ level: 'silent' }),
    counters: new CounterRegistry(),
    configDir: '.',
    dataDir: '.',
    applicationName: randomName('gw-'),
    pools: new PostgresPools(),
  });
  await dbs.load();
  t.after(() => dbs.close());
  const db = dbs.get<Record<string, never>>('main');
  // Old code: `Query read timeout` 1 ms after each statement was sent.
  const settings = await sql<{
    statement: string;
    idle: string;
  }>`SELECT current_setting('statement_timeout') AS statement, current_setting('idle_in_transaction_session_timeout') AS idle`.execute(db);
  assert.deepEqual(settings.rows, [{ statement: '2147483647ms', idle: '2147483647ms' }]);
  const slept = await db.transaction().execute(async (trx) => {
    await sql`SELECT pg_sleep(0.05)`.execute(trx);
    return (await sql<{ n: number }>`SELECT 1 AS n`.execute(trx)).rows;
  });
  assert.deepEqual(slept, [{ n: 1 }]);
});

test('postgres sink: the longest statementTimeoutMs writes its batches', { timeout: 20_000 }, async (t) => {
  const pg = await testSchema(t);
  await pg.query(`CREATE TABLE ${pg.name}.readings (id uuid PRIMARY KEY, seq int)`);
  const config = postgresSink.schema.parse({ url: pg.url, table: `${pg.name}.readings`, columns: { id: '${id}', seq: '${payload.seq}' }, batchTimeMs: 5, ...LONGEST });
  const sink = postgresSink.create(config, { logger: pino({ level: 'silent' }), counters: new CounterRegistry(), dataDir: '/nonexistent', bridge: 'long', sourceFilters: [] });
  const input = new Subject<Delivery>();
  const acked: number[] = [];
  const nacks: string[] = [];
  const subscription = sink(input).subscribe();
  t.after(() => subscription.unsubscribe());
  for (const seq of [1, 2]) {
    const envelope = createEnvelope({ topic: 't', payload: JSON.stringify({ seq }), origin: { source: 'mqtt', clientId: 'd', qos: 1 } });
    input.next(createDelivery(envelope, { onAck: () => acked.push(seq), onNack: (error) => nacks.push(error.message) }));
  }
  // Old code: the columns' read timed out at once (pg's reply timer), then every transaction's
  // `SET LOCAL idle_in_transaction_session_timeout = 2147488647` was refused.
  await eventually(() => assert.deepEqual([...acked].sort(), [1, 2], `nacks: ${nacks.join('; ')}`), { timeoutMs: 10_000 });
  assert.deepEqual(nacks, []);
  assert.deepEqual(await pg.query(`SELECT seq FROM ${pg.name}.readings ORDER BY seq`), [{ seq: 1 }, { seq: 2 }]);
});

test('postgres source: the longest statementTimeoutMs reads its outbox', { timeout: 20_000 }, async (t) => {
  const pg = await testSchema(t);
  await pg.query(`CREATE TABLE ${pg.name}.outbox (id bigserial PRIMARY KEY, topic text NOT NULL, payload text NOT NULL)`);
  await pg.query(`INSERT INTO ${pg.name}.outbox (topic, payload) VALUES ('t', 'a'), ('t', 'b')`);
  const source = fromPostgres(
    { url: pg.url, table: `${pg.name}.outbox`, topicColumn: 'topic', pollIntervalMs: 50, retryBackoffMs: 50, stopTimeoutMs: 500, ...LONGEST } as PostgresSourceConfig,
    {
      name: 'test',
      logger: pino({ level: 'silent' }),
      counters: new CounterRegistry(),
    },
  );
  const received: string[] = [];
  const subscription = source.subscribe((delivery) => {
    received.push(Buffer.from(delivery.envelope.payload).toString());
    delivery.ack();
  });
  t.after(() => subscription.unsubscribe());
  // Old code: the read's `BEGIN; SET LOCAL idle_in_transaction_session_timeout = 2147488647` was refused at every try.
  await eventually(async () => assert.deepEqual(await pg.query(`SELECT id FROM ${pg.name}.outbox`), []), { timeoutMs: 10_000 });
  assert.deepEqual(received, ['a', 'b']);
});
