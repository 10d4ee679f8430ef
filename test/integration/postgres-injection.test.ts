// Nothing a message carries becomes SQL text: topics, client ids and payloads built to inject
// SQL land verbatim as values, every statement the sink runs is one of a fixed few (recorded at
// the pool), and a canary table is untouched.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pg from 'pg';
import pino from 'pino';
import { Subject, lastValueFrom, toArray } from 'rxjs';
import { type Delivery, createDelivery } from '../../src/core/delivery.ts';
import { type Envelope, createEnvelope } from '../../src/core/envelope.ts';
import { isFerryError } from '../../src/core/errors.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import type { PoolOptions } from '../../src/postgres/connection.ts';
import { type PgPool, PostgresPools } from '../../src/postgres/pools.ts';
import { createPostgresSink, postgresSink } from '../../src/postgres/sink.ts';
import { testSchema } from '../harness/pg-schema.ts';

/** Pools whose every statement is recorded. */
function recordingPools(statements: string[]): PostgresPools {
  return new PostgresPools((options: PoolOptions) => {
    const pool = new pg.Pool({ ...options });
    const recorded: PgPool = {
      query: (text, values) => {
        statements.push(text);
        return pool.query(text, values) as never;
      },
      connect: async () => {
        const client = await pool.connect();
        return {
          // The sink's inserts are named statements ({ name, text, values }).
          query: (text: string | { text: string }, values?: unknown[]) => {
            statements.push(typeof text === 'string' ? text : text.text);
            return client.query(text as string, values) as never;
          },
          release: (error?: Error | boolean) => client.release(error),
          // The sink pipelines its statements.
          get pipeline() {
            return (client as unknown as { pipeline: boolean }).pipeline;
          },
          set pipeline(on: boolean) {
            (client as unknown as { pipeline: boolean }).pipeline = on;
          },
        };
      },
      end: () => pool.end(),
      on: (event, listener) => pool.on(event, listener),
    };
    return recorded;
  });
}

const ATTACKS = [
  "x'); DROP TABLE canary; --",
  '"; DELETE FROM canary; --',
  '$1',
  '$2::text); TRUNCATE canary; --',
  'NULL',
  '{NULL}',
  '{a,b},"c"\\',
  "\\'; SELECT pg_sleep(10); --",
  'Grüße 🌡️ 中文 ‮evil‬ \u2028',
  "1; COMMIT; DROP SCHEMA public CASCADE; BEGIN; SELECT '",
  // Backslashes, tabs, newlines and carriage returns, alone and as the escapes of text formats.
  '\\N',
  '\\.',
  'a\tb\nc\rd\\te\n\\.\n',
];

test('postgres sink: topics, client ids and payloads built to inject SQL change no statement and land verbatim; the canary is intact', async (t) => {
  const db = await testSchema(t);
  await db.query(`CREATE TABLE ${db.name}.canary (n int); INSERT INTO ${db.name}.canary VALUES (1), (2), (3)`);
  await db.query(`CREATE TABLE ${db.name}.readings (id uuid PRIMARY KEY, device text, topic text, client text, note text, body jsonb, raw bytea)`);
  const statements: string[] = [];
  const config = postgresSink.schema.parse({
    url: db.url,
    table: `${db.name}.readings`,
    columns: { id: '${id}', device: '${1}', topic: '${topic}', client: '${clientId}', note: '${payload.note}', body: '${payload}', raw: '${payload}' },
    batchSize: 100,
    batchTimeMs: 50,
  });
  const sink = createPostgresSink(
    config,
    { logger: pino({ level: 'silent' }), counters: new CounterRegistry(), dataDir: '/nonexistent', bridge: 'test', sourceFilters: ['devices/+/telemetry/#'] },
    recordingPools(statements),
  );

  const messages = ATTACKS.map((attack, i) => ({
    // MQTT topic levels cannot hold '/', '+' or '#': the attack goes in as it can.
    topic: `devices/${attack.replace(/[/+#]/g, '_')}/telemetry/${i}`,
    clientId: attack,
    payload: JSON.stringify({ note: attack, i }),
  }));
  // A payload with NUL and bytes that are not UTF-8: bytea takes them as they are, but it cannot be jsonb.
  const binary = Uint8Array.from([0x7b, 0x00, 0xff, 0x27, 0x3b, 0x7d]);
  const all = [...messages, { topic: 'devices/bin/telemetry/x', clientId: 'bin', payload: binary }];
  const settled = new Map<string, 'acked' | Error>();
  const envelopes: Envelope[] = [];
  const deliveries = all.map((m) => {
    const envelope = createEnvelope({ topic: m.topic, payload: m.payload, origin: { source: 'test', clientId: m.clientId, qos: 1 } });
    envelopes.push(envelope);
    return createDelivery(envelope, { onAck: () => settled.set(envelope.id, 'acked'), onNack: (error) => settled.set(envelope.id, error) });
  });
  const input = new Subject<Delivery>();
  const done = lastValueFrom(sink(input).pipe(toArray()));
  for (const d of deliveries) input.next(d);
  input.complete();
  await done;

  const binaryOutcome = settled.get((envelopes.at(-1) as Envelope).id);
  assert.ok(isFerryError(binaryOutcome, 'MESSAGE_INVALID'), String(binaryOutcome));
  assert.match(binaryOutcome.message, /column (note|body)/);
  assert.deepEqual(
    envelopes.slice(0, -1).map((e) => settled.get(e.id)),
    messages.map(() => 'acked'),
  );

  const rows = await db.query<{ id: string; device: string; topic: string; client: string; note: string; body: unknown; raw: Buffer }>(
    `SELECT id::text, device, topic, client, note, body, raw FROM ${db.name}.readings`,
  );
  const byId = new Map(rows.map((r) => [r.id, r]));
  assert.equal(rows.length, messages.length);
  messages.forEach((m, i) => {
    const row = byId.get((envelopes[i] as Envelope).id);
    assert.deepEqual(row, {
      id: (envelopes[i] as Envelope).id,
      device: m.topic.split('/')[1],
      topic: m.topic,
      client: m.clientId,
      note: ATTACKS[i],
      body: { note: ATTACKS[i], i },
      raw: Buffer.from(m.payload),
    });
  });
  assert.deepEqual(await db.query(`SELECT n FROM ${db.name}.canary ORDER BY n`), [{ n: 1 }, { n: 2 }, { n: 3 }]);

  // Every statement is one of the fixed few: two catalog reads, the check in a rolled-back
  // transaction, and the insert in transactions (first without its ON CONFLICT clause: the
  // conflict key is the message id), whose text comes from the config and the catalog only;
  // they begin with a bound on how long the server keeps one that waits for its next statement.
  const plain = `INSERT INTO "${db.name}"."readings" ("id", "device", "topic", "client", "note", "body", "raw") SELECT CAST(v.c1 AS uuid), CAST(v.c2 AS text), CAST(v.c3 AS text), CAST(v.c4 AS text), CAST(v.c5 AS text), CAST(v.c6 AS jsonb), CAST(v.c7 AS bytea) FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) AS v(c1, c2, c3, c4, c5, c6, c7)`;
  const insert = `${plain} ON CONFLICT ("id") DO NOTHING`;
  const distinct = [...new Set(statements)];
  assert.deepEqual(
    distinct.filter((s) => !s.startsWith('SELECT to_regclass') && !s.includes('FROM pg_catalog.pg_attribute')),
    ['BEGIN', insert, 'ROLLBACK', 'BEGIN; SET LOCAL idle_in_transaction_session_timeout = 35000', plain, 'COMMIT'],
  );
  assert.equal(distinct.length, 8);
  for (const attack of ATTACKS.filter((a) => a.includes(';'))) assert.ok(!statements.some((s) => s.includes(attack)), attack);
});
