// The postgres sink's reply timeout with batches pipelined on one connection. pg's reply timer
// (query_timeout, statementTimeoutMs plus connectTimeoutMs) started when a statement was queued
// on the client, not when the server could run it: on a slow server that was working (every
// insert within statement_timeout), the third statement in line timed out while it waited
// behind the two before it, the sink gave the connection up and wrote its batches again one at
// a time, while the transaction it left behind still ran and held their rows' locks. With a
// backlog this repeated for every burst, and with more batches in flight the rewrites timed
// out on those locks (SQLSTATE 57014) and were nacked: the bridge was reported down. The
// sink's own timer now counts from when the statement before it was answered.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Subject } from 'rxjs';
import { createDelivery, type Delivery } from '../../src/core/delivery.ts';
import { createEnvelope, type Envelope } from '../../src/core/envelope.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { postgresSink } from '../../src/postgres/sink.ts';
import { eventually } from '../harness/eventually.ts';
import { capturedEntries } from '../harness/log-lines.ts';
import { partitionProxy } from '../harness/partition-proxy.ts';
import { testSchema } from '../harness/pg-schema.ts';

const BATCHES = 8;
const BATCH_SIZE = 10;

interface LogEntry {
  readonly level: number;
  readonly msg: string;
  readonly time: number;
  readonly err?: { readonly message?: string };
}

/** A table whose inserts take `secondsPerRow` a row on the server, counting every row an insert ran for (a sequence is not rolled back). */
async function slowTable(db: Awaited<ReturnType<typeof testSchema>>, secondsPerRow: number): Promise<string> {
  const table = `${db.name}.readings`;
  await db.query(`CREATE TABLE ${table} (n bigint GENERATED ALWAYS AS IDENTITY, id uuid PRIMARY KEY, seq int, pid int NOT NULL DEFAULT pg_backend_pid())`);
  await db.query(`CREATE SEQUENCE ${db.name}.inserted`);
  await db.query(
    `CREATE FUNCTION ${db.name}.slow() RETURNS trigger LANGUAGE plpgsql AS
     $$ BEGIN PERFORM nextval('${db.name}.inserted'); PERFORM pg_sleep(${secondsPerRow}); RETURN NEW; END $$`,
  );
  await db.query(`CREATE TRIGGER slow BEFORE INSERT ON ${table} FOR EACH ROW EXECUTE FUNCTION ${db.name}.slow()`);
  return table;
}

/** The sink over `url`, fed messages `{ seq }`; a message nacked is handed again 100 ms later, as the buffer does. */
function feed(url: string, table: string, settings: { concurrency: number; statementTimeoutMs: number; connectTimeoutMs: number }) {
  const config = postgresSink.schema.parse({ url, table, columns: { id: '${id}', seq: '${payload.seq}' }, batchSize: BATCH_SIZE, batchTimeMs: 50, ...settings });
  const { logger, entries } = capturedEntries<LogEntry>('debug');
  const sink = postgresSink.create(config, { logger, counters: new CounterRegistry(), dataDir: '/nonexistent', bridge: 'slow', sourceFilters: [] });
  const input = new Subject<Delivery>();
  const acked: string[] = [];
  const nacks: string[] = [];
  const send = (envelope: Envelope) =>
    input.next(
      createDelivery(envelope, {
        onAck: () => acked.push(envelope.id),
        onNack: (error) => {
          nacks.push(error.message);
          setTimeout(() => send(envelope), 100);
        },
      }),
    );
  const subscription = sink(input).subscribe();
  const envelopes = Array.from({ length: BATCHES * BATCH_SIZE }, (_, seq) =>
    createEnvelope({ topic: 't', payload: JSON.stringify({ seq }), origin: { source: 'mqtt', clientId: 'd', qos: 1 } }),
  );
  return { envelopes, send, acked, nacks, entries, stop: () => subscription.unsubscribe() };
}

test('postgres sink, batches in flight on a slow server: a statement waiting behind others is not timed out; no reconnect, every row written once, in order', {
  timeout: 60_000,
}, async (t) => {
  const db = await testSchema(t);
  // Each insert of 10 rows takes 0.6 s; the reply timeout is 1.4 s. Four batches go at once
  // (BEGIN, 1, 2, COMMIT, BEGIN, 3, 4): old code timed out the third insert (answered 1.8 s
  // after it was queued), though the server answered each 0.6 s after the one before.
  const table = await slowTable(db, 0.06);
  const sink = feed(db.url, table, { concurrency: 4, statementTimeoutMs: 1000, connectTimeoutMs: 400 });
  t.after(sink.stop);
  for (const e of sink.envelopes) sink.send(e);
  await eventually(() => assert.equal(sink.acked.length, sink.envelopes.length, `nacks: ${sink.nacks.join('; ')}`), { timeoutMs: 30_000 });

  assert.deepEqual(sink.nacks, []);
  assert.deepEqual(
    sink.acked,
    sink.envelopes.map((e) => e.id),
  );
  const failures = sink.entries.filter((e) => e.level >= 20 && /failed/.test(e.msg)).map((e) => `${e.msg}: ${e.err?.message}`);
  assert.deepEqual(failures, [], 'a pipelined transaction failed');
  const rows = await db.query<{ seq: number; pid: number }>(`SELECT seq, pid FROM ${table} ORDER BY n`);
  assert.deepEqual(
    rows.map((r) => r.seq),
    sink.envelopes.map((_, seq) => seq),
  );
  assert.equal(new Set(rows.map((r) => r.pid)).size, 1, 'the sink gave its connection up and wrote on another');
  const [inserted] = await db.query<{ n: string }>(`SELECT last_value::text AS n FROM ${db.name}.inserted`);
  assert.equal(Number(inserted?.n), sink.envelopes.length, 'rows were inserted more than once (a transaction given up and written again)');
});

test('postgres sink, batches in flight: replies that stop coming (the path cut off, the sockets open) give the connection up a reply timeout after the last reply; the batches are written again, once', {
  timeout: 60_000,
}, async (t) => {
  const db = await testSchema(t);
  const table = await slowTable(db, 0.03);
  const proxy = await partitionProxy({ host: new URL(db.url).hostname, port: Number(new URL(db.url).port || 5432) });
  t.after(() => proxy.close());
  const url = new URL(db.url);
  url.host = `127.0.0.1:${proxy.port}`;
  // Reply timeout 1.4 s. The partition proxy's kernel answers TCP (keepalive too): only the reply timeout notices.
  const sink = feed(url.toString(), table, { concurrency: 4, statementTimeoutMs: 1000, connectTimeoutMs: 400 });
  t.after(sink.stop);
  for (const e of sink.envelopes) sink.send(e);
  await eventually(() => assert.ok(sink.acked.length >= BATCH_SIZE), { timeoutMs: 20_000 });
  const cutAt = Date.now();
  proxy.partition();

  const givenUp = await eventually(
    () => {
      const entry = sink.entries.find((e) => e.err?.message?.includes('no reply from the server'));
      assert.ok(entry, 'the connection was never given up');
      return entry;
    },
    { timeoutMs: 15_000 },
  );
  const after = givenUp.time - cutAt;
  t.diagnostic(`given up ${after} ms after the cut: ${givenUp.err?.message}`);
  assert.ok(after < 1400 + 1000, `given up ${after} ms after the cut`);
  // Written again on a new connection (once the transaction left behind is ended by the server:
  // idle in transaction for the reply timeout; its rows' locks hold the same rows up till then).
  await eventually(() => assert.equal(new Set(sink.acked).size, sink.envelopes.length), { timeoutMs: 30_000 });
  const rows = await db.query<{ id: string; pid: number }>(`SELECT id::text, pid FROM ${table} ORDER BY n`);
  assert.deepEqual(rows.map((r) => r.id).sort(), sink.envelopes.map((e) => e.id).sort(), 'every message once');
  assert.ok(new Set(rows.map((r) => r.pid)).size >= 2, 'every row came through one connection');
});
