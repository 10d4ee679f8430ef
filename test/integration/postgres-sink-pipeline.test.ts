// The postgres sink with several batches in flight (each in a transaction of its own
// connection, committed in arrival order): a row the server refuses is rejected alone while
// the batches around it are written; a batch that fails as a whole rolls back the batches
// staged after it, so nothing nacked is in the table, nothing acked is missing, and the
// messages sent again land in their order.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import { Subject, lastValueFrom, toArray } from 'rxjs';
import type { Delivery } from '../../src/core/delivery.ts';
import { type Envelope, createEnvelope } from '../../src/core/envelope.ts';
import { isFerryError } from '../../src/core/errors.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { postgresSink } from '../../src/postgres/sink.ts';
import { trackedEnvelopes } from '../conformance/deliveries.ts';
import { testSchema } from '../harness/pg-schema.ts';

const COUNT = 240;

function messages(): Envelope[] {
  return Array.from({ length: COUNT }, (_, seq) =>
    createEnvelope({ topic: 'devices/d1/telemetry/t', payload: JSON.stringify({ seq }), origin: { source: 'mqtt', clientId: 'd1', qos: 1 } }),
  );
}

function sinkFor(url: string, table: string) {
  const config = postgresSink.schema.parse({
    url,
    table,
    columns: { id: '${id}', seq: '${payload.seq}' },
    batchSize: 20,
    batchTimeMs: 5,
    concurrency: 3,
  });
  return postgresSink.create(config, { logger: pino({ level: 'silent' }), counters: new CounterRegistry(), dataDir: '/nonexistent', bridge: 'test', sourceFilters: [] });
}

test('postgres sink, batches in flight: rows the server refuses are rejected alone; every other row is written once, in arrival order, over more than one connection', async (t) => {
  const db = await testSchema(t);
  await db.query(
    `CREATE TABLE ${db.name}.readings (n bigint GENERATED ALWAYS AS IDENTITY, id uuid PRIMARY KEY, seq int CHECK (seq % 37 <> 5), pid int NOT NULL DEFAULT pg_backend_pid())`,
  );
  const envelopes = messages();
  const tracked = trackedEnvelopes(envelopes);
  const input = new Subject<Delivery>();
  const events = lastValueFrom(sinkFor(db.url, `${db.name}.readings`)(input).pipe(toArray()));
  for (const d of tracked.deliveries) input.next(d);
  await tracked.settled();
  input.complete();
  await events;

  const refused = envelopes.flatMap((e, seq) => (seq % 37 === 5 ? [e] : []));
  assert.deepEqual([...tracked.nacked.keys()].sort(), refused.map((e) => e.id).sort());
  for (const e of refused) {
    const error = tracked.nacked.get(e.id);
    assert.ok(isFerryError(error, 'MESSAGE_INVALID') && !error.retryable, String(error));
    assert.match(error.message, /SQLSTATE 23514/);
  }
  assert.deepEqual(tracked.doubleSettles, []);
  const rows = await db.query<{ seq: number; pid: number }>(`SELECT seq, pid FROM ${db.name}.readings ORDER BY n`);
  assert.deepEqual(
    rows.map((r) => r.seq),
    envelopes.flatMap((_, seq) => (seq % 37 === 5 ? [] : [seq])),
  );
  assert.ok(new Set(rows.map((r) => r.pid)).size >= 2, 'every batch was written by the same connection');
});

test('postgres sink, batches in flight: a batch that fails as a whole rolls back the staged batches after it; nothing acked is missing, nothing nacked is written, and sent again they land in order', async (t) => {
  const db = await testSchema(t);
  // A fault the server raises for one message while the test wants it (SQLSTATE 55000: not the
  // row's fault, so the whole batch fails and is retried).
  await db.query(`CREATE TABLE ${db.name}.readings (n bigint GENERATED ALWAYS AS IDENTITY, id uuid PRIMARY KEY, seq int)`);
  await db.query(`CREATE TABLE ${db.name}.fault (seq int)`);
  await db.query(`INSERT INTO ${db.name}.fault VALUES (130)`);
  await db.query(
    `CREATE FUNCTION ${db.name}.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
       IF EXISTS (SELECT 1 FROM ${db.name}.fault WHERE seq = NEW.seq) THEN
         RAISE EXCEPTION 'refused for the test' USING ERRCODE = '55000';
       END IF;
       RETURN NEW;
     END $$`,
  );
  await db.query(`CREATE TRIGGER refuse BEFORE INSERT ON ${db.name}.readings FOR EACH ROW EXECUTE FUNCTION ${db.name}.refuse()`);

  const envelopes = messages();
  const input = new Subject<Delivery>();
  const events = lastValueFrom(sinkFor(db.url, `${db.name}.readings`)(input).pipe(toArray()));
  const first = trackedEnvelopes(envelopes);
  for (const d of first.deliveries) input.next(d);
  await first.settled();

  const outcomes = envelopes.map((e) => (first.nacked.has(e.id) ? 'n' : 'a')).join('');
  assert.match(outcomes, /^a{120}n{120}$/, 'the batches before the failed one (120-139) are acked, it and every one after it nacked');
  assert.match(first.nacked.get((envelopes[130] as Envelope).id)?.message ?? '', /refused for the test/);
  assert.match(first.nacked.get((envelopes[239] as Envelope).id)?.message ?? '', /not written: an earlier batch failed/);
  const written = await db.query<{ id: string }>(`SELECT id::text FROM ${db.name}.readings ORDER BY n`);
  assert.deepEqual(
    written.map((r) => r.id),
    first.acked,
    'the table holds exactly the acked messages, in their order',
  );

  await db.query(`DELETE FROM ${db.name}.fault`);
  const again = trackedEnvelopes(envelopes.filter((e) => first.nacked.has(e.id)));
  for (const d of again.deliveries) input.next(d);
  await again.settled();
  input.complete();
  await events;
  assert.equal(again.nacked.size, 0);
  const rows = await db.query<{ seq: number }>(`SELECT seq FROM ${db.name}.readings ORDER BY n`);
  assert.deepEqual(
    rows.map((r) => r.seq),
    envelopes.map((_, seq) => seq),
  );
});
