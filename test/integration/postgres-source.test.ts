// The postgres source (an outbox table) against the real server: the shared source contract,
// rows written while no gateway reads arriving once it starts, two readers sharing one outbox
// without taking a row twice, marking instead of deleting, and a NOTIFY waking a read long
// before the next poll.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pg from 'pg';
import pino from 'pino';
import type { Subscription } from 'rxjs';
import type { Delivery } from '../../src/core/delivery.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { type PostgresSourceConfig, fromPostgres } from '../../src/lib/postgres.ts';
import { createPostgresSource, postgresSource } from '../../src/postgres/outbox-source.ts';
import { type PgPool, PostgresPools } from '../../src/postgres/pools.ts';
import type { Source } from '../../src/core/stream.ts';
import { sourceConformance } from '../conformance/source-suite.ts';
import { tcpProxy } from '../harness/cuttable-proxy.ts';
import { eventually } from '../harness/eventually.ts';
import { freshSchema, testSchema } from '../harness/pg-schema.ts';
import { randomName } from '../harness/services.ts';

const OUTBOX = (schema: string) =>
  `CREATE TABLE ${schema}.outbox (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, topic text NOT NULL, device text, payload jsonb NOT NULL, delivered_at timestamptz)`;

// Through the public entry point (ferry/postgres), as a library user makes it.
function sourceFor(config: Record<string, unknown>, afterStop?: (work: Promise<void>) => void): Source {
  return fromPostgres({ retryBackoffMs: 50, stopTimeoutMs: 500, ...config } as PostgresSourceConfig, {
    name: 'test',
    logger: pino({ level: 'silent' }),
    counters: new CounterRegistry(),
    ...(afterStop === undefined ? {} : { afterStop }),
  });
}

const text = (d: Delivery) => Buffer.from(d.envelope.payload).toString();

sourceConformance('postgres (outbox table)', {
  start: async () => {
    // A text payload: the bytes as written.
    const { url, schema, admin } = await freshSchema('ferry_o_', (s) => `CREATE TABLE ${s}.outbox (id bigserial PRIMARY KEY, topic text NOT NULL, payload text NOT NULL)`);
    const stops: Promise<void>[] = [];
    let previous: Promise<unknown> = Promise.resolve();
    return {
      // Polled often and never notified: the fallback alone must carry the contract. The suite
      // holds up to three deliveries unacked; rows written slower than the polls come in one
      // batch each, and no more than maxBatches are read before one settles.
      source: sourceFor({ url, table: `${schema}.outbox`, topicColumn: 'topic', pollIntervalMs: 50, maxBatches: 3 }, (work) => stops.push(work)),
      // The producer's acknowledgement for an outbox: its row is gone.
      produce: async (payload) => {
        const inserted = previous.then(() => admin.query<{ id: string }>(`INSERT INTO ${schema}.outbox (topic, payload) VALUES ('t', $1) RETURNING id`, [payload]));
        previous = inserted.catch(() => {});
        const id = (await inserted).rows[0]?.id;
        await eventually(async () => assert.equal((await admin.query(`SELECT 1 FROM ${schema}.outbox WHERE id = $1`, [id])).rowCount, 0), { timeoutMs: 20_000 });
      },
      cleanup: async () => {
        await Promise.all(stops);
        await admin.query(`DROP SCHEMA ${schema} CASCADE`);
        await admin.end();
      },
    };
  },
});

/** Subscribes and acks every delivery; `stop()` waits for the source's last commit. */
function reader(source: Source, onDelivery: (d: Delivery) => void = (d) => d.ack()) {
  const received: Delivery[] = [];
  const subscription: Subscription = source.subscribe((d) => {
    received.push(d);
    onDelivery(d);
  });
  return { received, subscription };
}

test('rows written while no gateway reads arrive once it starts, each once, in id order, with topic, key and payload', async (t) => {
  const db = await testSchema(t);
  await db.query(OUTBOX(db.name));
  for (let i = 1; i <= 250; i++) await db.query(`INSERT INTO ${db.name}.outbox (topic, device, payload) VALUES ($1, $2, $3)`, [`cmd/${i}`, `dev-${i % 7}`, { n: i }]);
  const stops: Promise<void>[] = [];
  const { received, subscription } = reader(sourceFor({ url: db.url, table: `${db.name}.outbox`, topicColumn: 'topic', keyColumn: 'device', batchSize: 40 }, (w) => stops.push(w)));
  t.after(() => subscription.unsubscribe());
  await eventually(async () => assert.equal((await db.query(`SELECT count(*)::int AS n FROM ${db.name}.outbox`))[0]?.n, 0), { timeoutMs: 30_000 });
  assert.equal(received.length, 250);
  assert.deepEqual(
    received.map((d) => JSON.parse(text(d)).n),
    Array.from({ length: 250 }, (_, i) => i + 1),
  );
  assert.equal(received[6]?.envelope.topic, 'cmd/7');
  assert.equal(received[6]?.envelope.key, 'dev-0');
  subscription.unsubscribe();
  await Promise.all(stops);
});

test('two readers on one outbox deliver each row once between them', async (t) => {
  const db = await testSchema(t);
  await db.query(OUTBOX(db.name));
  const stops: Promise<void>[] = [];
  const config = { url: db.url, table: `${db.name}.outbox`, batchSize: 10, pollIntervalMs: 100 };
  // Slow acks keep batches open, so that each reader skips the other's locked rows.
  const slowAck = (d: Delivery) => setTimeout(() => d.ack(), 5);
  const a = reader(
    sourceFor(config, (w) => stops.push(w)),
    slowAck,
  );
  const b = reader(
    sourceFor(config, (w) => stops.push(w)),
    slowAck,
  );
  t.after(() => {
    a.subscription.unsubscribe();
    b.subscription.unsubscribe();
  });
  for (let i = 0; i < 400; i += 50) {
    await db.query(`INSERT INTO ${db.name}.outbox (device, topic, payload) SELECT n::text, 't', jsonb_build_object('n', n) FROM generate_series($1::int, $2::int) n`, [i, i + 49]);
  }
  await eventually(async () => assert.equal((await db.query(`SELECT count(*)::int AS n FROM ${db.name}.outbox`))[0]?.n, 0), { timeoutMs: 30_000 });
  const all = [...a.received, ...b.received].map((d) => JSON.parse(text(d)).n as number).sort((x, y) => x - y);
  assert.deepEqual(
    all,
    Array.from({ length: 400 }, (_, i) => i),
  );
  assert.ok(a.received.length > 0 && b.received.length > 0, `both read: ${a.received.length} and ${b.received.length}`);
  a.subscription.unsubscribe();
  b.subscription.unsubscribe();
  await Promise.all(stops);
});

test('delivered: mark sets the mark column instead of deleting, and marked rows are not read again', async (t) => {
  const db = await testSchema(t);
  await db.query(OUTBOX(db.name));
  await db.query(`INSERT INTO ${db.name}.outbox (topic, payload, delivered_at) VALUES ('old', '1', now())`);
  await db.query(`INSERT INTO ${db.name}.outbox (topic, payload) VALUES ('new', '2')`);
  const stops: Promise<void>[] = [];
  const { received, subscription } = reader(
    sourceFor({ url: db.url, table: `${db.name}.outbox`, topicColumn: 'topic', delivered: 'mark', markColumn: 'delivered_at', pollIntervalMs: 50 }, (w) => stops.push(w)),
  );
  t.after(() => subscription.unsubscribe());
  await eventually(async () => assert.equal((await db.query(`SELECT count(*)::int AS n FROM ${db.name}.outbox WHERE delivered_at IS NULL`))[0]?.n, 0));
  assert.deepEqual(
    received.map((d) => d.envelope.topic),
    ['new'],
  );
  assert.equal((await db.query(`SELECT count(*)::int AS n FROM ${db.name}.outbox`))[0]?.n, 2);
  subscription.unsubscribe();
  await Promise.all(stops);
});

/** The message id of the first row `config`'s source reads, left unsettled (it stays in the table). */
async function idOfFirstRow(config: Record<string, unknown>): Promise<string> {
  const stops: Promise<void>[] = [];
  const { received, subscription } = reader(
    sourceFor(config, (w) => stops.push(w)),
    () => {},
  );
  try {
    await eventually(() => assert.ok(received.length > 0));
    return received[0]?.envelope.id as string;
  } finally {
    subscription.unsubscribe();
    await Promise.all(stops);
  }
}

test("a row read again keeps its message id; a row written again (updated, or its id column started again) gets another; a view's rows one at each read", async (t) => {
  const db = await testSchema(t);
  await db.query(OUTBOX(db.name));
  const config = { url: db.url, table: `${db.name}.outbox`, topicColumn: 'topic', pollIntervalMs: 50 };
  await db.query(`INSERT INTO ${db.name}.outbox (topic, payload) VALUES ('a', '1')`);
  const first = await idOfFirstRow(config);
  assert.match(first, /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, 'a name-based UUID');
  assert.equal(await idOfFirstRow(config), first, 'the same row read by another source');
  // Nacked, the row is read again by the same source.
  const ids: string[] = [];
  const nacking = reader(sourceFor(config), (d) => {
    ids.push(d.envelope.id);
    if (ids.length === 1) d.nack(new Error('refused'));
    else d.ack();
  });
  await eventually(async () => assert.equal((await db.query(`SELECT count(*)::int AS n FROM ${db.name}.outbox`))[0]?.n, 0));
  nacking.subscription.unsubscribe();
  assert.deepEqual(ids, [first, first]);

  await db.query(`INSERT INTO ${db.name}.outbox (topic, payload) VALUES ('b', '2')`);
  const before = await idOfFirstRow(config);
  await db.query(`UPDATE ${db.name}.outbox SET payload = '3'`);
  const updated = await idOfFirstRow(config);
  assert.notEqual(updated, before, 'an updated row is a new message');
  // The id column started again: a new row with the id of one delivered before.
  await db.query(`TRUNCATE ${db.name}.outbox RESTART IDENTITY`);
  await db.query(`INSERT INTO ${db.name}.outbox (topic, payload) VALUES ('a', '1')`);
  assert.equal((await db.query(`SELECT id::int AS id FROM ${db.name}.outbox`))[0]?.id, 1);
  const reused = await idOfFirstRow(config);
  assert.ok(![first, before, updated].includes(reused), 'a new row is a new message');

  // A view has no xmin: it is read, and its rows get a new id at each read.
  await db.query(`CREATE VIEW ${db.name}.pending AS SELECT * FROM ${db.name}.outbox`);
  const viewed = { ...config, table: `${db.name}.pending` };
  const once = await idOfFirstRow(viewed);
  assert.notEqual(await idOfFirstRow(viewed), once);
});

test('a NOTIFY on the channel wakes a read long before the next poll; a bytea payload arrives as its bytes', async (t) => {
  const db = await testSchema(t);
  await db.query(`CREATE TABLE ${db.name}.raw (id bigserial PRIMARY KEY, payload bytea NOT NULL)`);
  const channel = randomName('ferry_ch_');
  const stops: Promise<void>[] = [];
  // A poll once an hour: only the notification can bring the row in the test's time.
  const { received, subscription } = reader(sourceFor({ url: db.url, table: `${db.name}.raw`, channel, pollIntervalMs: 3_600_000 }, (w) => stops.push(w)));
  t.after(() => subscription.unsubscribe());
  // The first read (at start) found nothing; wait until the LISTEN is in place.
  await eventually(async () => assert.equal((await db.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE query = $1`, [`LISTEN "${channel}"`]))[0]?.n, 1));
  await db.query(`INSERT INTO ${db.name}.raw (payload) VALUES ($1)`, [Buffer.from([0, 1, 2, 255])]);
  await db.query(`NOTIFY ${channel}`);
  await eventually(() => assert.equal(received.length, 1));
  assert.deepEqual([...(received[0]?.envelope.payload ?? [])], [0, 1, 2, 255]);
  assert.equal(received[0]?.envelope.topic, `${db.name}.raw`);
  subscription.unsubscribe();
  await Promise.all(stops);
});

test('PostgreSQL unreachable while rows are in flight and while more are written: every row arrives after it is back, none is lost', { timeout: 60_000 }, async (t) => {
  const db = await testSchema(t);
  await db.query(OUTBOX(db.name));
  const server = new URL(db.url);
  const proxy = await tcpProxy({ host: server.hostname, port: Number(server.port || 5432) });
  t.after(() => proxy.close());
  const proxied = new URL(db.url);
  proxied.port = String(proxy.port);
  const stops: Promise<void>[] = [];
  // Acks held until the server is gone: their batch cannot commit, so its rows must come again.
  const held: Delivery[] = [];
  let hold = true;
  const { received, subscription } = reader(
    sourceFor({ url: proxied.href, table: `${db.name}.outbox`, topicColumn: 'topic', pollIntervalMs: 100, connectTimeoutMs: 500 }, (w) => stops.push(w)),
    (d) => (hold ? held.push(d) : d.ack()),
  );
  t.after(() => subscription.unsubscribe());
  // In one statement, so that one read takes all five (reads one after another, each waiting
  // for its acks, could stop short of five on a slow machine).
  await db.query(`INSERT INTO ${db.name}.outbox (topic, payload) SELECT 't', json_build_object('n', i) FROM generate_series(1, 5) AS i`);
  await eventually(() => assert.equal(held.length, 5));
  await proxy.cut();
  for (const d of held) d.ack();
  hold = false;
  for (let i = 6; i <= 10; i++) await db.query(`INSERT INTO ${db.name}.outbox (topic, payload) VALUES ('t', $1)`, [{ n: i }]);
  await proxy.restore();
  await eventually(async () => assert.equal((await db.query(`SELECT count(*)::int AS n FROM ${db.name}.outbox`))[0]?.n, 0), { timeoutMs: 30_000 });
  const numbers = received.map((d) => JSON.parse(text(d)).n as number);
  assert.deepEqual(
    [...new Set(numbers)].sort((a, b) => a - b),
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
  );
  // The first five were acked, but their batch never committed: they came again (at least once).
  assert.deepEqual(numbers.slice(0, 5), [1, 2, 3, 4, 5]);
  subscription.unsubscribe();
  await Promise.all(stops);
});

test('unsubscribed while its LISTEN is still running: the stop ends, the LISTEN connection is discarded and the pool closes', { timeout: 30_000 }, async (t) => {
  const db = await testSchema(t);
  await db.query(OUTBOX(db.name));
  // A real pool whose LISTEN statements wait for the test: the moment a stop can come is held
  // open (a real server answers LISTEN within a millisecond, too fast to aim at).
  let listenReached: () => void = () => {};
  const reached = new Promise<void>((resolve) => (listenReached = resolve));
  let answerListen: () => void = () => {};
  const answer = new Promise<void>((resolve) => (answerListen = resolve));
  let ended = false;
  const pools = new PostgresPools((options) => {
    const pool = new pg.Pool({ ...options });
    const connect = pool.connect.bind(pool) as () => Promise<pg.PoolClient>;
    const end = pool.end.bind(pool);
    return Object.assign(pool, {
      connect: async () => {
        const client = await connect();
        const query = client.query.bind(client) as (...args: unknown[]) => Promise<unknown>;
        return Object.assign(client, {
          query: async (...args: unknown[]) => {
            if (typeof args[0] === 'string' && args[0].startsWith('LISTEN')) {
              listenReached();
              await answer;
            }
            return query(...args);
          },
        });
      },
      end: async () => {
        await end();
        ended = true;
      },
    }) as unknown as PgPool;
  });
  const stops: Promise<void>[] = [];
  const config = postgresSource.schema.parse({ url: db.url, table: `${db.name}.outbox`, topicColumn: 'topic', pollIntervalMs: 50 });
  const source = createPostgresSource(
    config,
    { logger: pino({ level: 'silent' }), counters: new CounterRegistry(), dataDir: '/nonexistent', bridge: 'listen-race', afterStop: (w) => stops.push(w) },
    pools,
  );
  const subscription = source.subscribe((d) => d.ack());
  await reached;
  subscription.unsubscribe();
  answerListen();
  const outcome = await Promise.race([Promise.all(stops).then(() => 'stopped'), new Promise((resolve) => setTimeout(resolve, 10_000, 'still stopping after 10 s'))]);
  assert.equal(outcome, 'stopped');
  assert.equal(ended, true, 'the pool closed');
  assert.equal(pools.size, 0);
});

test('config: mark needs its column, maxBatches stays below the pool, names are checked', () => {
  const parse = (c: Record<string, unknown>) => postgresSource.schema.safeParse({ url: 'postgres://f@h/d', table: 'outbox', ...c });
  assert.match(JSON.stringify(parse({ delivered: 'mark' }).error?.issues), /needs `markColumn`/);
  assert.match(JSON.stringify(parse({ maxBatches: 4 }).error?.issues), /must be below `poolSize`/);
  assert.match(JSON.stringify(parse({ table: 'out;box' }).error?.issues), /letters, digits/);
  assert.equal(parse({}).success, true);
});
