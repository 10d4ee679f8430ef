// A network cut off between the gateway and PostgreSQL in the middle of a transaction: the
// client gives the connection up (its reply timeout), while the server, never told, keeps the
// session and its open transaction. The rows that transaction inserted stay locked on the
// server, so the same rows written again on a new connection wait for it (the sink), or are
// skipped by every read (the outbox source), for as long as the server keeps it: without a
// bound, until its TCP notices (hours).
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import pino from 'pino';
import { Subject } from 'rxjs';
import { createDelivery, type Delivery } from '../../src/core/delivery.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import { isFerryError } from '../../src/core/errors.ts';
import { type PostgresSourceConfig, fromPostgres } from '../../src/lib/postgres.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { postgresSink } from '../../src/postgres/sink.ts';
import { partitionProxy } from '../harness/partition-proxy.ts';
import { eventually } from '../harness/eventually.ts';
import { testSchema } from '../harness/pg-schema.ts';

const COUNT = 100;

test('postgres sink: a network cut off while a transaction is open does not stall it; the server ends the transaction left behind, and every message is written once', {
  timeout: 90_000,
}, async (t) => {
  const db = await testSchema(t);
  const proxy = await partitionProxy({ host: new URL(db.url).hostname, port: Number(new URL(db.url).port || 5432) });
  t.after(() => proxy.close());
  // Message 5's insert sleeps, so that the path can be cut while the server still has the
  // batches sent after it to run: it runs them, and the last transaction they begin waits for
  // a COMMIT that never comes, holding their rows.
  await db.query(`CREATE TABLE ${db.name}.readings (id uuid PRIMARY KEY, seq int)`);
  await db.query(
    `CREATE FUNCTION ${db.name}.slow() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN IF NEW.seq = 5 THEN PERFORM pg_sleep(1); END IF; RETURN NEW; END $$`,
  );
  await db.query(`CREATE TRIGGER slow BEFORE INSERT ON ${db.name}.readings FOR EACH ROW EXECUTE FUNCTION ${db.name}.slow()`);
  const url = new URL(db.url);
  url.host = `127.0.0.1:${proxy.port}`;
  const config = postgresSink.schema.parse({
    url: url.toString(),
    table: `${db.name}.readings`,
    columns: { id: '${id}', seq: '${payload.seq}' },
    batchSize: 10,
    batchTimeMs: 5,
    concurrency: 4,
    statementTimeoutMs: 2000,
    connectTimeoutMs: 1000,
  });
  const sink = postgresSink.create(config, { logger: pino({ level: 'silent' }), counters: new CounterRegistry(), dataDir: '/nonexistent', bridge: 'test', sourceFilters: [] });

  // As the buffer does: a message nacked retryably is handed to the sink again.
  const input = new Subject<Delivery>();
  const acked = new Set<string>();
  const refused: string[] = [];
  const envelopes = Array.from({ length: COUNT }, (_, seq) =>
    createEnvelope({ topic: 'devices/d1/telemetry/t', payload: JSON.stringify({ seq }), origin: { source: 'mqtt', clientId: 'd1', qos: 1 } }),
  );
  const send = (index: number) => {
    const envelope = envelopes[index] as (typeof envelopes)[number];
    input.next(
      createDelivery(envelope, {
        onAck: () => acked.add(envelope.id),
        onNack: (error) => {
          if (isFerryError(error) && !error.retryable) refused.push(error.message);
          else setTimeout(() => send(index), 100);
        },
      }),
    );
  };
  const subscription = sink(input).subscribe();
  t.after(() => subscription.unsubscribe());
  for (let i = 0; i < COUNT; i++) send(i);

  // Cut the path while message 5's insert sleeps.
  const sleeping = async () => (await db.query(`SELECT 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query LIKE '%${db.name}%readings%'`)).length > 0;
  for (let i = 0; i < 200 && !(await sleeping()); i++) await sleep(10);
  assert.ok(await sleeping(), "message 5's insert never ran");
  proxy.partition();
  // The transaction left behind: open, with rows inserted, its client gone.
  const orphans = async () =>
    db.query<{ pid: number }>(`SELECT pid FROM pg_stat_activity WHERE state = 'idle in transaction' AND backend_xid IS NOT NULL AND query LIKE '%${db.name}%readings%'`);
  for (let i = 0; i < 300 && (await orphans()).length === 0; i++) await sleep(10);
  assert.equal((await orphans()).length, 1, 'the cut left no transaction open on the server');

  // Every message is written; old code waited for the rows locked by that transaction for as
  // long as the server kept it.
  for (let i = 0; i < 600 && acked.size < COUNT; i++) await sleep(50);
  assert.deepEqual(refused, []);
  assert.equal(acked.size, COUNT, `${acked.size} of ${COUNT} messages written 30 s after the cut`);
  const rows = await db.query<{ id: string }>(`SELECT id::text FROM ${db.name}.readings`);
  assert.deepEqual(new Set(rows.map((r) => r.id)), new Set(envelopes.map((e) => e.id)));
  assert.equal(rows.length, COUNT);
  assert.deepEqual(await orphans(), []);
});

test('outbox: a network cut off while a batch waits for its acks does not hide its rows; the server ends the transaction left behind, and they are delivered again', {
  timeout: 90_000,
}, async (t) => {
  const db = await testSchema(t);
  const proxy = await partitionProxy({ host: new URL(db.url).hostname, port: Number(new URL(db.url).port || 5432) });
  t.after(() => proxy.close());
  await db.query(`CREATE TABLE ${db.name}.outbox (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload jsonb NOT NULL)`);
  const url = new URL(db.url);
  url.host = `127.0.0.1:${proxy.port}`;
  const source = fromPostgres(
    {
      url: url.toString(),
      table: `${db.name}.outbox`,
      retryBackoffMs: 50,
      stopTimeoutMs: 500,
      pollIntervalMs: 100,
      statementTimeoutMs: 2000,
      connectTimeoutMs: 1000,
    } as PostgresSourceConfig,
    { name: 'test', logger: pino({ level: 'silent' }), counters: new CounterRegistry() },
  );
  // Acks held until the path is cut: their batch's delete cannot reach the server.
  const received: Delivery[] = [];
  let hold = true;
  const held: Delivery[] = [];
  const subscription = source.subscribe((d) => {
    received.push(d);
    if (hold) held.push(d);
    else d.ack();
  });
  t.after(() => subscription.unsubscribe());
  await db.query(`INSERT INTO ${db.name}.outbox (payload) SELECT json_build_object('n', i) FROM generate_series(1, 3) AS i`);
  await eventually(() => assert.equal(held.length, 3));
  proxy.partition();
  hold = false;
  for (const d of held) d.ack();

  // The rows come again once the server ended the transaction that locked them (its client
  // gone), and are deleted; old code skipped them (locked) for as long as the server kept it.
  await eventually(async () => assert.equal((await db.query(`SELECT count(*)::int AS n FROM ${db.name}.outbox`))[0]?.n, 0), { timeoutMs: 30_000 });
  const numbers = received.map((d) => (JSON.parse(Buffer.from(d.envelope.payload).toString()) as { n: number }).n);
  assert.deepEqual(numbers, [1, 2, 3, 1, 2, 3]);
  // The same messages: a device that had them is not sent them twice.
  assert.deepEqual(
    received.slice(3).map((d) => d.envelope.id),
    received.slice(0, 3).map((d) => d.envelope.id),
  );
});
