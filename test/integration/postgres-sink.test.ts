// The postgres sink against the real server: the shared sink contract, values converted to each
// column's type, a bad message refused alone while its batch-mates are written, redeliveries
// that add no row, and a mapping that cannot fit stopping the sink at startup.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import { Subject, lastValueFrom, toArray } from 'rxjs';
import { type Delivery, createDelivery } from '../../src/core/delivery.ts';
import { type Envelope, createEnvelope } from '../../src/core/envelope.ts';
import { isFerryError } from '../../src/core/errors.ts';
import type { Sink, SinkEvent } from '../../src/core/stream.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { toPostgres } from '../../src/lib/postgres.ts';
import { createPostgresSink, postgresSink } from '../../src/postgres/sink.ts';
import { sinkConformance } from '../conformance/sink-suite.ts';
import { tcpProxy } from '../harness/cuttable-proxy.ts';
import { freshSchema, testSchema } from '../harness/pg-schema.ts';
import { randomName } from '../harness/services.ts';

const FILTERS = ['devices/+/telemetry/#'];

function context(counters = new CounterRegistry()) {
  return { logger: pino({ level: 'silent' }), counters, dataDir: '/nonexistent', bridge: 'test', sourceFilters: FILTERS };
}

const quiet = { name: 'test', logger: pino({ level: 'silent' }) };

function sinkFor(config: Record<string, unknown>, counters = new CounterRegistry()): Sink {
  return postgresSink.create(postgresSink.schema.parse({ batchTimeMs: 5, ...config }), context(counters));
}

function conformance(name: string, concurrency: number) {
  sinkConformance(name, {
    batchSize: 40,
    working: async () => {
      const { url, schema, admin } = await freshSchema('ferry_c_', (s) => `CREATE TABLE ${s}.messages (id uuid PRIMARY KEY, topic text NOT NULL, body jsonb NOT NULL)`);
      return {
        // Through the public entry point (ferry/postgres), as a library user makes it.
        sink: toPostgres({ url, table: `${schema}.messages`, columns: { id: '${id}', topic: '${topic}', body: '${payload}' }, batchSize: 40, batchTimeMs: 5, concurrency }, quiet),
        readBack: async () => (await admin.query<{ id: string }>(`SELECT id::text FROM ${schema}.messages`)).rows.map((r) => r.id),
        cleanup: async () => {
          await admin.query(`DROP SCHEMA ${schema} CASCADE`);
          await admin.end();
        },
      };
    },
    failing: async () => ({
      // Nothing listens on port 1 of loopback: connecting is refused at once.
      sink: toPostgres({ url: 'postgres://ferry@127.0.0.1:1/ferry', table: 'messages', columns: { id: '${id}' }, connectTimeoutMs: 500, batchTimeMs: 5, concurrency }, quiet),
      cleanup: async () => {},
    }),
    flaky: async () => {
      // PostgreSQL behind a proxy that is cut until recover(): the server itself is shared and stays up.
      const fresh = await freshSchema('ferry_f_', (s) => `CREATE TABLE ${s}.messages (n bigint GENERATED ALWAYS AS IDENTITY, id uuid PRIMARY KEY, topic text NOT NULL)`);
      const { schema, admin } = fresh;
      const url = new URL(fresh.url);
      const proxy = await tcpProxy({ host: url.hostname, port: Number(url.port || 5432) });
      // The sink reads the table's columns from the catalog as it starts: cut only after that.
      const proxied = new URL(url.href);
      proxied.port = String(proxy.port);
      const sink = sinkFor({ url: proxied.href, table: `${schema}.messages`, columns: { id: '${id}', topic: '${topic}' }, batchSize: 40, connectTimeoutMs: 500, concurrency });
      await proxy.cut();
      return {
        sink,
        recover: () => proxy.restore(),
        readBack: async () => (await admin.query<{ id: string }>(`SELECT id::text FROM ${schema}.messages ORDER BY n`)).rows.map((r) => r.id),
        cleanup: async () => {
          await proxy.close();
          await admin.query(`DROP SCHEMA ${schema} CASCADE`);
          await admin.end();
        },
      };
    },
  });
}

// One batch at a time, and the default: 4 batches in flight, pipelined on one connection.
conformance('postgres, 1 batch in flight', 1);
conformance('postgres, 4 batches in flight', 4);

interface Message {
  readonly topic: string;
  readonly payload: string | Uint8Array;
  readonly clientId?: string;
  readonly id?: string;
  readonly timestamp?: number;
}

/** Deliveries of the given messages that record how each was settled. */
function deliveriesOf(messages: readonly Message[]) {
  const settled = new Map<string, 'acked' | Error>();
  const envelopes: Envelope[] = [];
  const deliveries = messages.map((m) => {
    const envelope = createEnvelope({
      topic: m.topic,
      payload: m.payload,
      origin: { source: 'test', clientId: m.clientId ?? 'd1', qos: 1 },
      ...(m.id === undefined ? {} : { id: m.id }),
      ...(m.timestamp === undefined ? {} : { timestamp: m.timestamp }),
    });
    envelopes.push(envelope);
    return createDelivery(envelope, { onAck: () => settled.set(envelope.id, 'acked'), onNack: (error) => settled.set(envelope.id, error) });
  });
  return { deliveries, envelopes, settled, outcome: (i: number) => settled.get((envelopes[i] as Envelope).id) };
}

async function run(sink: Sink, deliveries: readonly Delivery[]): Promise<SinkEvent[]> {
  const input = new Subject<Delivery>();
  const done = lastValueFrom(sink(input).pipe(toArray()));
  for (const d of deliveries) input.next(d);
  input.complete();
  return done;
}

test("postgres sink: each value is converted to its column's type, read from the catalog", async (t) => {
  const db = await testSchema(t);
  await db.query(`CREATE TABLE ${db.name}.readings (
    id uuid PRIMARY KEY, device text NOT NULL, topic varchar(200), received_at timestamptz NOT NULL, day date,
    body jsonb, doc json, raw bytea, celsius numeric(6,2), humidity double precision, count integer, big bigint, small smallint,
    ok boolean, site text, client text, label text, meta jsonb, note text, untouched text DEFAULT 'default')`);
  const sink = sinkFor({
    url: db.url,
    table: `${db.name}.readings`,
    columns: {
      id: '${id}',
      device: '${1}',
      topic: '${topic}',
      received_at: '${timestamp}',
      day: '${timestamp}',
      body: '${payload}',
      doc: '${payload}',
      raw: '${payload}',
      celsius: '${payload.celsius}',
      humidity: '${payload.humidity}',
      count: '${payload.count}',
      big: '${payload.big}',
      small: '${payload.small}',
      ok: '${payload.ok}',
      site: '${payload.site}',
      client: '${clientId}',
      label: 'dev-${1}/${#}',
      meta: '${payload.meta}',
      note: '${payload.note}',
    },
  });
  const at = Date.UTC(2026, 10, 24, 2, 41, 7, 112);
  const payload = '{"celsius":21.456,"humidity":40.5,"count":7,"big":9007199254740991,"small":-3,"ok":true,"site":"north","meta":{"fw":"1.2","tags":["a"]}}';
  const { deliveries, envelopes, settled } = deliveriesOf([{ topic: 'devices/pump-1/telemetry/pressure/in', payload, clientId: 'pump-1', timestamp: at }]);
  const events = await run(sink, deliveries);
  assert.deepEqual(
    events.map((e) => [e.type, e.count]),
    [['written', 1]],
  );
  assert.equal(settled.get((envelopes[0] as Envelope).id), 'acked');
  const [row] = await db.query(
    `SELECT id::text, device, topic, received_at, day::text, body, doc::text, raw, celsius::text, humidity, count, big::text, small, ok, site, client, label, meta, note, untouched FROM ${db.name}.readings`,
  );
  assert.deepEqual(row, {
    id: (envelopes[0] as Envelope).id,
    device: 'pump-1',
    topic: 'devices/pump-1/telemetry/pressure/in',
    received_at: new Date(at),
    day: '2026-11-24',
    body: JSON.parse(payload),
    doc: payload,
    raw: Buffer.from(payload),
    celsius: '21.46',
    humidity: 40.5,
    count: 7,
    big: '9007199254740991',
    small: -3,
    ok: true,
    site: 'north',
    client: 'pump-1',
    label: 'dev-pump-1/pressure/in',
    meta: { fw: '1.2', tags: ['a'] },
    note: null, // absent from the payload: NULL
    untouched: 'default',
  });
});

test('postgres sink: a message that does not fit is refused alone with the reason (found before the statement, or by the server with its SQLSTATE); its batch-mates are written', async (t) => {
  const db = await testSchema(t);
  await db.query(
    `CREATE TABLE ${db.name}.readings (id uuid PRIMARY KEY, device text NOT NULL, body jsonb NOT NULL, count integer, celsius numeric CHECK (celsius BETWEEN -50 AND 150), name varchar(5))`,
  );
  const counters = new CounterRegistry();
  const sink = sinkFor(
    {
      url: db.url,
      table: `${db.name}.readings`,
      columns: { id: '${id}', device: '${1}', body: '${payload}', count: '${payload.count}', celsius: '${payload.celsius}', name: '${payload.name}' },
      batchSize: 100,
      batchTimeMs: 200,
    },
    counters,
  );
  const topic = 'devices/d1/telemetry/t';
  const m = (payload: string) => ({ topic, payload });
  const { deliveries, envelopes, outcome } = deliveriesOf([
    m('{"count":1,"celsius":20,"name":"a"}'),
    m('{"count":2, oops'), // not JSON, for a jsonb column
    m('{"count":"three","celsius":20}'), // not a number, for an integer column
    m('{"count":4,"celsius":500}'), // the CHECK constraint: refused by the server
    m('{"count":5,"celsius":21}'),
    m('{"count":6,"name":"far too long"}'), // varchar(5): refused by the server
    m('{"count":7}'),
    m('{"count":8,"celsius":-60}'), // CHECK again
    m('{"count":9}'),
  ]);
  const events = await run(sink, deliveries);
  assert.deepEqual(
    events.map((e) => [e.type, e.count]),
    [
      ['written', 4],
      ['failed', 5],
    ],
  );
  for (const i of [0, 4, 6, 8]) assert.equal(outcome(i), 'acked');
  const refused = (i: number, reason: RegExp) => {
    const error = outcome(i);
    assert.ok(isFerryError(error, 'MESSAGE_INVALID') && !error.retryable, `${i}: ${String(error)}`);
    assert.match(
      error.message,
      new RegExp(`^postgres sink of bridge 'test': message ${(envelopes[i] as Envelope).id} \\(MQTT topic '${topic}'\\) cannot be written to ${db.name}\\.readings: `),
    );
    assert.match(error.message, reason);
  };
  refused(1, /column body \(jsonb\) from '\$\{payload\}': its value is not JSON: /);
  refused(2, /column count \(integer\) from '\$\{payload\.count\}': its value "three" is not an integer/);
  refused(3, /PostgreSQL refused the row: SQLSTATE 23514: new row for relation "readings" violates check constraint "readings_celsius_check"/);
  refused(5, /PostgreSQL refused the row: SQLSTATE 22001: value too long for type character varying\(5\)/);
  refused(7, /SQLSTATE 23514/);
  const rows = await db.query<{ count: number }>(`SELECT count FROM ${db.name}.readings ORDER BY count`);
  assert.deepEqual(
    rows.map((r) => r.count),
    [1, 5, 7, 9],
  );
  assert.equal(counters.get('postgres.messages.rejected{bridge=test}'), 5);
  assert.equal(counters.get('postgres.batches.split{bridge=test}'), 1);
});

test('postgres sink: a message delivered again adds no row (ON CONFLICT on the column mapped to ${id})', async (t) => {
  const db = await testSchema(t);
  await db.query(`CREATE TABLE ${db.name}.readings (id uuid PRIMARY KEY, body jsonb)`);
  const counters = new CounterRegistry();
  const config = { url: db.url, table: `${db.name}.readings`, columns: { id: '${id}', body: '${payload}' } };
  const messages = [1, 2, 3].map((n) => ({ topic: 'devices/d1/telemetry/t', payload: `{"n":${n}}` }));
  const first = deliveriesOf(messages);
  await run(sinkFor(config, counters), first.deliveries);
  // The same messages (same ids) again, with one new one, through a new sink as after a restart.
  const again = deliveriesOf([...messages.map((m, i) => ({ ...m, id: (first.envelopes[i] as Envelope).id })), { topic: 'devices/d1/telemetry/t', payload: '{"n":4}' }]);
  const events = await run(sinkFor(config, counters), again.deliveries);
  assert.deepEqual(
    events.map((e) => [e.type, e.count]),
    [['written', 4]],
  );
  assert.ok([...again.settled.values()].every((s) => s === 'acked'));
  assert.deepEqual(
    (await db.query<{ n: number }>(`SELECT (body->>'n')::int AS n FROM ${db.name}.readings ORDER BY n`)).map((r) => r.n),
    [1, 2, 3, 4],
  );
  assert.equal(counters.get('postgres.rows.skipped{bridge=test}'), 3);
});

test('postgres sink: an updatable view is written like a table', async (t) => {
  const db = await testSchema(t);
  await db.query(`CREATE TABLE ${db.name}.readings (id uuid PRIMARY KEY, body jsonb);
    CREATE VIEW ${db.name}.recent AS SELECT id, body FROM ${db.name}.readings`);
  const { deliveries, settled } = deliveriesOf([1, 2, 3].map((n) => ({ topic: 'devices/d1/telemetry/t', payload: `{"n":${n}}` })));
  await run(sinkFor({ url: db.url, table: `${db.name}.recent`, columns: { id: '${id}', body: '${payload}' } }), deliveries);
  assert.deepEqual([...settled.values()], ['acked', 'acked', 'acked']);
  assert.deepEqual(
    (await db.query<{ n: number }>(`SELECT (body->>'n')::int AS n FROM ${db.name}.readings ORDER BY n`)).map((r) => r.n),
    [1, 2, 3],
  );
});

test('postgres sink: onConflict update with conflictColumns keeps the latest row per key; when the latest is refused, the one before it is written', async (t) => {
  const db = await testSchema(t);
  await db.query(`CREATE TABLE ${db.name}.latest (device text PRIMARY KEY, celsius numeric CHECK (celsius < 100), at timestamptz)`);
  await db.query(`INSERT INTO ${db.name}.latest VALUES ('d2', 1, now())`);
  const sink = sinkFor({
    url: db.url,
    table: `${db.name}.latest`,
    columns: { device: '${1}', celsius: '${payload.c}', at: '${timestamp}' },
    conflictColumns: ['device'],
    onConflict: 'update',
    batchSize: 100,
    batchTimeMs: 100,
  });
  const m = (device: string, c: number) => ({ topic: `devices/${device}/telemetry/t`, payload: `{"c":${c}}` });
  const { deliveries, settled, outcome } = deliveriesOf([m('d1', 10), m('d2', 20), m('d1', 11), m('d3', 30), m('d2', 21), m('d1', 12), m('d3', 999)]);
  await run(sink, deliveries);
  assert.ok(isFerryError(outcome(6), 'MESSAGE_INVALID'));
  assert.equal([...settled.values()].filter((s) => s === 'acked').length, 6);
  const rows = await db.query<{ device: string; celsius: string }>(`SELECT device, celsius::text FROM ${db.name}.latest ORDER BY device`);
  assert.deepEqual(rows, [
    { device: 'd1', celsius: '12' },
    { device: 'd2', celsius: '21' },
    { device: 'd3', celsius: '30' },
  ]);
});

/** Runs a sink until it stops with an error or completes; returns the error and what was settled. */
async function startup(sink: Sink, count = 3) {
  const { deliveries, settled } = deliveriesOf(Array.from({ length: count }, () => ({ topic: 'devices/d1/telemetry/t', payload: '{}' })));
  const input = new Subject<Delivery>();
  const ended = lastValueFrom(sink(input).pipe(toArray())).then(
    () => undefined,
    (error: unknown) => error,
  );
  for (const d of deliveries) input.next(d);
  let timer: NodeJS.Timeout | undefined;
  const error = await Promise.race([ended, new Promise((resolve) => (timer = setTimeout(() => resolve('still running after 10 s'), 10_000)))]);
  clearTimeout(timer);
  input.complete();
  return { error, settled };
}

test('postgres sink: a mapping that cannot fit stops the sink at startup with an error naming the bridge, and settles nothing', async (t) => {
  const db = await testSchema(t);
  await db.query(
    `CREATE TABLE ${db.name}.readings (id uuid PRIMARY KEY, device text); CREATE TABLE ${db.name}.nokey (id uuid, device text); CREATE TABLE "${db.name}"."Mixed" (id uuid PRIMARY KEY)`,
  );
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ table: `${db.name}.nope`, columns: { id: '${id}' } }, new RegExp(`table ${db.name}\\.nope does not exist$`)],
    [{ table: `${db.name}.mixed`, columns: { id: '${id}' } }, /table .*\.mixed does not exist/],
    [{ table: `${db.name}.readings`, columns: { id: '${id}', devce: '${1}' } }, /table .*\.readings has no column 'devce' \(its columns: id uuid, device text\)/],
    [
      { table: `${db.name}.nokey`, columns: { id: '${id}', device: '${1}' } },
      /nokey refuses the insert: SQLSTATE 42P10: there is no unique or exclusion constraint matching the ON CONFLICT specification; the conflict columns need a unique index or constraint: CREATE UNIQUE INDEX ON .*\.nokey \(id\)/,
    ],
  ];
  for (const [config, reason] of cases) {
    const { error, settled } = await startup(sinkFor({ url: db.url, ...config }));
    assert.ok(isFerryError(error, 'CONFIG_INVALID'), String(error));
    assert.match(error.message, /^postgres sink of bridge 'test': /);
    assert.match(error.message, reason);
    assert.equal(settled.size, 0, 'nothing nacked: the messages stay buffered');
  }
  // Mixed case is matched exactly.
  const mixed = deliveriesOf([{ topic: 'devices/d1/telemetry/t', payload: '{}' }]);
  await run(sinkFor({ url: db.url, table: `${db.name}.Mixed`, columns: { id: '${id}' } }), mixed.deliveries);
  assert.equal(mixed.outcome(0), 'acked');
});

test('postgres sink: a mapped column dropped under a running sink stops the sink; the message is neither written nor dead-lettered', { timeout: 30_000 }, async (t) => {
  const db = await testSchema(t);
  await db.query(`CREATE TABLE ${db.name}.readings (id uuid PRIMARY KEY, device text)`);
  const sink = sinkFor({ url: db.url, table: `${db.name}.readings`, columns: { id: '${id}', device: '${1}' }, batchSize: 1 });
  const input = new Subject<Delivery>();
  const ended = lastValueFrom(sink(input).pipe(toArray())).then(
    () => undefined,
    (error: unknown) => error,
  );
  const one = () => deliveriesOf([{ topic: 'devices/d1/telemetry/t', payload: '{}' }]);
  const settle = async (batch: ReturnType<typeof one>) => {
    input.next(batch.deliveries[0] as Delivery);
    for (let i = 0; i < 100 && batch.settled.size === 0; i++) await new Promise((r) => setTimeout(r, 50));
    return batch.outcome(0);
  };
  assert.equal(await settle(one()), 'acked');
  await db.query(`ALTER TABLE ${db.name}.readings DROP COLUMN device`);
  // The insert is refused (42703), the table read again, and the mapping no longer fits: the
  // sink stops as it would at startup, leaving the message buffered (unsettled, or nacked to retry).
  const failed = one();
  input.next(failed.deliveries[0] as Delivery);
  const error = await ended;
  const outcome = failed.outcome(0);
  assert.ok(outcome === undefined || (isFerryError(outcome) && outcome.retryable), `buffered, not dead-lettered: ${String(outcome)}`);
  assert.deepEqual(await db.query(`SELECT count(*)::int AS n FROM ${db.name}.readings`), [{ n: 1 }]);
  assert.ok(isFerryError(error, 'CONFIG_INVALID'), String(error));
  assert.match(error.message, /has no column 'device'/);
});

test('postgres sink: the server unreachable fails batches retryably (UPSTREAM_UNAVAILABLE)', async () => {
  const { deliveries, outcome } = deliveriesOf([{ topic: 'devices/d1/telemetry/t', payload: '{}' }]);
  await run(sinkFor({ url: 'postgres://ferry@127.0.0.1:1/ferry', table: 'readings', columns: { id: '${id}' }, connectTimeoutMs: 500 }), deliveries);
  const error = outcome(0);
  assert.ok(isFerryError(error, 'UPSTREAM_UNAVAILABLE') && error.retryable, String(error));
  assert.match(error.message, /^postgres sink of bridge 'test': cannot read table readings on postgres:\/\/ferry@127\.0\.0\.1:1\/ferry: .*ECONNREFUSED/);
});

test('postgres sink: the password comes from a variable or a file and appears in no error', async (t) => {
  const db = await testSchema(t);
  const base = new URL(db.url);
  const password = 'pw-that-must-not-leak';
  const ctx = context();
  // Trust authentication ignores the password: the point here is where it is read from and where it never shows.
  const sink = createPostgresSink(
    postgresSink.schema.parse({ url: `postgres://${base.username}:${password}@127.0.0.1:1${base.pathname}`, table: 'readings', columns: { id: '${id}' }, connectTimeoutMs: 500 }),
    ctx,
  );
  const { deliveries, outcome } = deliveriesOf([{ topic: 'devices/d1/telemetry/t', payload: '{}' }]);
  await run(sink, deliveries);
  const error = outcome(0) as Error;
  assert.doesNotMatch(`${error.message} ${JSON.stringify(error)} ${String((error as { cause?: unknown }).cause)}`, new RegExp(password));

  const unset = randomName('FERRY_UNSET_');
  const missing = await startup(sinkFor({ url: db.url, table: 'readings', columns: { id: '${id}' }, password: { env: unset } }));
  assert.ok(isFerryError(missing.error, 'CONFIG_INVALID'));
  assert.match(missing.error.message, new RegExp(`cannot read the password for postgres://postgres@127\\.0\\.0\\.1:5432/test: the environment variable ${unset} is not set`));
  const noFile = await startup(sinkFor({ url: db.url, table: 'readings', columns: { id: '${id}' }, password: { file: '/nonexistent/pg-password' } }));
  assert.match((noFile.error as Error).message, /no such file: \/nonexistent\/pg-password/);
});
