// The postgres sink with several batches in flight (pipelined on one connection, in
// transactions committed in arrival order): batches share transactions; a row the server
// refuses is rejected alone while the batches around it are written; a batch that fails as a
// whole fails the batches after it, so nothing nacked is in the table, nothing acked is
// missing, and the messages sent again land in their order.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import pino from 'pino';
import { Subject, lastValueFrom, toArray } from 'rxjs';
import type { Delivery } from '../../src/core/delivery.ts';
import { type Envelope, createEnvelope } from '../../src/core/envelope.ts';
import { isFerryError } from '../../src/core/errors.ts';
import type { Sink } from '../../src/core/stream.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { postgresSink } from '../../src/postgres/sink.ts';
import { type Tracked, trackedEnvelopes } from '../conformance/deliveries.ts';
import { testSchema } from '../harness/pg-schema.ts';

const COUNT = 240;

function messages(): Envelope[] {
  return Array.from({ length: COUNT }, (_, seq) =>
    createEnvelope({ topic: 'devices/d1/telemetry/t', payload: JSON.stringify({ seq }), origin: { source: 'mqtt', clientId: 'd1', qos: 1 } }),
  );
}

function sinkFor(url: string, table: string, concurrency = 3) {
  const config = postgresSink.schema.parse({
    url,
    table,
    columns: { id: '${id}', seq: '${payload.seq}' },
    batchSize: 20,
    batchTimeMs: 5,
    concurrency,
  });
  return postgresSink.create(config, { logger: pino({ level: 'silent' }), counters: new CounterRegistry(), dataDir: '/nonexistent', bridge: 'test', sourceFilters: [] });
}

/** Hands every message to the sink at once, waits until each is settled, then completes its input. */
async function writeAll(sink: Sink, envelopes: readonly Envelope[]): Promise<Tracked> {
  const tracked = trackedEnvelopes(envelopes);
  const input = new Subject<Delivery>();
  const events = lastValueFrom(sink(input).pipe(toArray()));
  for (const d of tracked.deliveries) input.next(d);
  await tracked.settled();
  input.complete();
  await events;
  return tracked;
}

test('postgres sink, batches in flight: the batches go through one connection without waiting for each reply, several to a transaction, in arrival order', async (t) => {
  const db = await testSchema(t);
  await db.query(`CREATE TABLE ${db.name}.readings (n bigint GENERATED ALWAYS AS IDENTITY, id uuid PRIMARY KEY, seq int, pid int NOT NULL DEFAULT pg_backend_pid())`);
  const envelopes = messages();
  const tracked = await writeAll(sinkFor(db.url, `${db.name}.readings`, 4), envelopes);

  assert.deepEqual(
    tracked.acked,
    envelopes.map((e) => e.id),
  );
  const rows = await db.query<{ seq: number; pid: number; tx: string }>(`SELECT seq, pid, xmin::text AS tx FROM ${db.name}.readings ORDER BY n`);
  assert.deepEqual(
    rows.map((r) => r.seq),
    envelopes.map((_, seq) => seq),
  );
  assert.equal(new Set(rows.map((r) => r.pid)).size, 1, 'the batches were written by more than one connection');
  // 12 batches of 20; pipelined, a transaction takes the batches sent while the one before it commits.
  const transactions = new Set(rows.map((r) => r.tx)).size;
  assert.ok(transactions < COUNT / 20, `every batch was a transaction of its own (${transactions})`);
});

test('postgres sink, batches in flight: rows the server refuses are rejected alone; every other row is written once, in arrival order', async (t) => {
  const db = await testSchema(t);
  await db.query(`CREATE TABLE ${db.name}.readings (n bigint GENERATED ALWAYS AS IDENTITY, id uuid PRIMARY KEY, seq int CHECK (seq % 37 <> 5))`);
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
  const rows = await db.query<{ seq: number }>(`SELECT seq FROM ${db.name}.readings ORDER BY n`);
  assert.deepEqual(
    rows.map((r) => r.seq),
    envelopes.flatMap((_, seq) => (seq % 37 === 5 ? [] : [seq])),
  );
});

test('postgres sink, batches in flight: after a refused row, the batches that waited behind the ones written alone are pipelined again while the load goes on', async (t) => {
  // One row refused (in the second batch): its transaction's batches are written one at a time.
  // The batches formed meanwhile waited behind them, and every batch formed while any of those
  // was in flight waited too: with messages always waiting (a backlog), every batch to the last
  // was written alone, one round trip per statement, and the sink never caught up until its
  // input ran dry. Now they are pipelined once the batches written alone are done.
  const db = await testSchema(t);
  await db.query(`CREATE TABLE ${db.name}.readings (n bigint GENERATED ALWAYS AS IDENTITY, id uuid PRIMARY KEY, seq int CHECK (seq <> 25))`);
  const envelopes = Array.from({ length: 2 * COUNT }, (_, seq) =>
    createEnvelope({ topic: 'devices/d1/telemetry/t', payload: JSON.stringify({ seq }), origin: { source: 'mqtt', clientId: 'd1', qos: 1 } }),
  );
  const tracked = await writeAll(sinkFor(db.url, `${db.name}.readings`, 4), envelopes);

  const refused = envelopes[25] as Envelope;
  assert.deepEqual([...tracked.nacked.keys()], [refused.id]);
  assert.match(tracked.nacked.get(refused.id)?.message ?? '', /SQLSTATE 23514/);
  assert.deepEqual(tracked.doubleSettles, []);
  const rows = await db.query<{ seq: number; tx: string }>(`SELECT seq, xmin::text AS tx FROM ${db.name}.readings ORDER BY n`);
  assert.deepEqual(
    rows.map((r) => r.seq),
    envelopes.flatMap((_, seq) => (seq === 25 ? [] : [seq])),
  );
  // The second half: 12 batches of 20, each its own transaction when written alone.
  const tail = new Set(rows.filter((r) => r.seq >= COUNT).map((r) => r.tx)).size;
  t.diagnostic(`the last ${COUNT / 20} batches went in ${tail} transactions`);
  assert.ok(tail < COUNT / 20, `the last ${COUNT / 20} batches were each written alone (${tail} transactions)`);
});

test('postgres sink, batches in flight: a batch that fails as a whole fails the batches after it; nothing acked is missing, nothing nacked is written, and sent again they land in order', async (t) => {
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

test('postgres sink, batches in flight: the connection killed under a pipeline of transactions loses nothing: every message is acked and written once, in order', async (t) => {
  const db = await testSchema(t);
  // The server ends the sink's connection once (FATAL 57P01, as at a restart) while it inserts
  // message 100, with batches before and after it sent: a sequence counts, since the
  // transaction that ran it is gone with the connection.
  await db.query(`CREATE TABLE ${db.name}.readings (n bigint GENERATED ALWAYS AS IDENTITY, id uuid PRIMARY KEY, seq int, pid int NOT NULL DEFAULT pg_backend_pid())`);
  await db.query(`CREATE SEQUENCE ${db.name}.once`);
  await db.query(
    `CREATE FUNCTION ${db.name}.kill_once() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
       IF NEW.seq = 100 AND nextval('${db.name}.once') = 1 THEN
         PERFORM pg_terminate_backend(pg_backend_pid());
       END IF;
       RETURN NEW;
     END $$`,
  );
  await db.query(`CREATE TRIGGER kill_once BEFORE INSERT ON ${db.name}.readings FOR EACH ROW EXECUTE FUNCTION ${db.name}.kill_once()`);

  const envelopes = messages();
  const tracked = await writeAll(sinkFor(db.url, `${db.name}.readings`, 4), envelopes);

  // The batches of the transactions that were lost with the connection are written again, one at a time, on a new one.
  assert.deepEqual([...tracked.nacked.values()], []);
  assert.deepEqual(
    tracked.acked,
    envelopes.map((e) => e.id),
  );
  assert.deepEqual(tracked.doubleSettles, []);
  assert.ok(Number((await db.query<{ n: string }>(`SELECT last_value::text AS n FROM ${db.name}.once`))[0]?.n) >= 1, 'message 100 was never inserted');
  const rows = await db.query<{ seq: number; pid: number }>(`SELECT seq, pid FROM ${db.name}.readings ORDER BY n`);
  assert.deepEqual(
    rows.map((r) => r.seq),
    envelopes.map((_, seq) => seq),
  );
  assert.ok(new Set(rows.map((r) => r.pid)).size >= 2, 'every row came through one connection: it was not killed');
});

test('postgres sink, batches in flight, randomized (seeded): refused rows, redeliveries, the connection killed, bursts, 1 to 6 in flight: every message settled once, the refused alone, the rest in the table once and in order', async (t) => {
  const db = await testSchema(t);
  let seed = 20261204;
  const random = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
  for (let round = 0; round < 8; round++) {
    const table = `${db.name}.r${round}`;
    const refusedEvery = 20 + Math.floor(random() * 60);
    const killAt = Math.floor(random() * COUNT);
    const concurrency = 1 + Math.floor(random() * 6);
    const batchSize = 5 + Math.floor(random() * 40);
    const what = `round ${round}: ${concurrency} in flight, batches of ${batchSize}, every ${refusedEvery}th refused, killed at ${killAt}`;
    await db.query(`CREATE TABLE ${table} (n bigint GENERATED ALWAYS AS IDENTITY, id uuid PRIMARY KEY, seq int CHECK (seq % ${refusedEvery} <> 7))`);
    const envelopes = messages();
    const refused = new Set(envelopes.filter((_, seq) => seq % refusedEvery === 7).map((e) => e.id));
    // Some are in the table already: delivered again after a crash.
    const before = envelopes.filter((e) => !refused.has(e.id) && random() < 0.05);
    for (const e of before) await db.query(`INSERT INTO ${table} (id, seq) VALUES ($1, $2)`, [e.id, envelopes.indexOf(e)]);
    await db.query(`CREATE SEQUENCE ${table}_once`);
    await db.query(
      `CREATE FUNCTION ${table}_kill() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF NEW.seq = ${killAt} AND nextval('${table}_once') = 1 THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF;
         RETURN NEW;
       END $$`,
    );
    await db.query(`CREATE TRIGGER kill BEFORE INSERT ON ${table} FOR EACH ROW EXECUTE FUNCTION ${table}_kill()`);

    const config = postgresSink.schema.parse({ url: db.url, table, columns: { id: '${id}', seq: '${payload.seq}' }, batchSize, batchTimeMs: 2, concurrency });
    const sink = postgresSink.create(config, { logger: pino({ level: 'silent' }), counters: new CounterRegistry(), dataDir: '/nonexistent', bridge: 'test', sourceFilters: [] });
    const input = new Subject<Delivery>();
    const events = lastValueFrom(sink(input).pipe(toArray()));
    const notRetried = new Set<string>();
    let pending: readonly Envelope[] = envelopes;
    // In bursts with pauses, and what is nacked as retryable sent again, as the buffer does.
    for (let attempt = 0; pending.length > 0; attempt++) {
      assert.ok(attempt < 5, `${what}: still nacked after 5 attempts`);
      const tracked = trackedEnvelopes(pending);
      for (let i = 0; i < tracked.deliveries.length; ) {
        const burst = 1 + Math.floor(random() * 80);
        for (const d of tracked.deliveries.slice(i, i + burst)) input.next(d);
        i += burst;
        if (random() < 0.5) await sleep(Math.floor(random() * 5));
      }
      await tracked.settled();
      assert.deepEqual(tracked.doubleSettles, [], what);
      for (const [id, error] of tracked.nacked) if (!(isFerryError(error) && error.retryable)) notRetried.add(id);
      pending = pending.filter((e) => tracked.nacked.has(e.id) && !notRetried.has(e.id));
    }
    input.complete();
    await events;

    assert.deepEqual([...notRetried].sort(), [...refused].sort(), `${what}: refused for good are exactly the rows the table refuses`);
    const rows = await db.query<{ id: string; seq: number }>(`SELECT id::text, seq FROM ${table} ORDER BY n`);
    assert.deepEqual(
      rows.map((r) => r.id).sort(),
      envelopes
        .filter((e) => !refused.has(e.id))
        .map((e) => e.id)
        .sort(),
      `${what}: every message not refused is in the table once`,
    );
    const written = rows.filter((r) => !before.some((e) => e.id === r.id)).map((r) => r.seq);
    assert.deepEqual(
      written,
      written.toSorted((a, b) => a - b),
      `${what}: rows out of arrival order`,
    );
  }
});
