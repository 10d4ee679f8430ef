// A network cut off under the outbox source's connections tells neither end: the LISTEN
// connection brings no notification, and an idle connection of the pool takes the next read's
// statement and never answers; TCP's keepalive notices only hours later (the kernel's
// defaults). The source asks its LISTEN connection a `SELECT 1` every `listenHeartbeatMs`, gives
// it up when one goes unanswered and LISTENs again on a new connection; and the first statement
// on a connection from the pool (LISTEN, or a read's BEGIN) gets `connectTimeoutMs`, not pg's
// reply timeout.
import assert from 'node:assert/strict';
import { type TestContext, test } from 'node:test';
import pg from 'pg';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { createPostgresSource, postgresSource } from '../../src/postgres/outbox-source.ts';
import { type PgPool, PostgresPools } from '../../src/postgres/pools.ts';
import { eventually } from '../harness/eventually.ts';
import { capturedLogger } from '../harness/log-lines.ts';
import { partitionProxy } from '../harness/partition-proxy.ts';
import { testSchema } from '../harness/pg-schema.ts';
import { randomName } from '../harness/services.ts';

/** An outbox source reading through a partition proxy, with a real pool seen from the client's side. */
async function outboxBehindProxy(t: TestContext, settings: { pollIntervalMs: number; listenHeartbeatMs: number }) {
  const db = await testSchema(t);
  const proxy = await partitionProxy({ host: new URL(db.url).hostname, port: Number(new URL(db.url).port || 5432) });
  t.after(() => proxy.close());
  await db.query(`CREATE TABLE ${db.name}.outbox (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload jsonb NOT NULL)`);
  // A channel of its own: channels are the server's, shared with every other test.
  const channel = randomName('ch_');

  // How many of the pool's connections are idle, and the LISTEN statements that succeeded.
  const opened: pg.Pool[] = [];
  const seen = { listens: 0 };
  const pools = new PostgresPools((options) => {
    const pool = new pg.Pool({ ...options });
    opened.push(pool);
    // As Ferry's own factory: a failure of a held connection is told to its holder.
    pool.on('acquire', (client) => client.on('error', () => {}));
    const connect = pool.connect.bind(pool) as () => Promise<pg.PoolClient>;
    return Object.assign(pool, {
      connect: async () => {
        const client = await connect();
        const query = client.query.bind(client) as (...args: unknown[]) => Promise<unknown>;
        return Object.assign(client, {
          query: async (...args: unknown[]) => {
            const result = await query(...args);
            if (typeof args[0] === 'string' && args[0].startsWith('LISTEN')) seen.listens += 1;
            return result;
          },
        });
      },
    }) as unknown as PgPool;
  });
  // Nothing reads but the LISTEN connection: every other connection of the pool is idle, so
  // that no read is on the wire when the path is cut (a read starts within one tick of taking
  // its connection, and the check and the cut run in one tick).
  const quiet = () =>
    eventually(() => {
      const pool = opened[0] as pg.Pool;
      assert.equal(pool.waitingCount, 0);
      assert.equal(pool.idleCount, pool.totalCount - 1);
    });

  const url = new URL(db.url);
  url.host = `127.0.0.1:${proxy.port}`;
  const config = postgresSource.schema.parse({
    url: url.toString(),
    table: `${db.name}.outbox`,
    channel,
    ...settings,
    retryBackoffMs: 50,
    stopTimeoutMs: 500,
    connectTimeoutMs: 1000,
    // pg's reply timeout (this plus connectTimeoutMs) outlasts the test: a statement left
    // waiting on a connection cut off does not fail within it.
    statementTimeoutMs: 120_000,
  });
  const { logger, lines } = capturedLogger('warn');
  const source = createPostgresSource(config, { logger, counters: new CounterRegistry(), dataDir: '/nonexistent', bridge: 'listen-cut' }, pools);
  const received: number[] = [];
  const subscription = source.subscribe((d) => {
    received.push((JSON.parse(Buffer.from(d.envelope.payload).toString()) as { n: number }).n);
    d.ack();
  });
  t.after(() => subscription.unsubscribe());
  const insert = (n: number) => db.query(`INSERT INTO ${db.name}.outbox (payload) VALUES ('{"n": ${n}}'); NOTIFY ${channel}`);
  const empty = () => eventually(async () => assert.deepEqual(await db.query(`SELECT id FROM ${db.name}.outbox`), []));
  return { proxy, seen, quiet, lines, received, insert, empty };
}

test('outbox: a LISTEN connection cut off without either end being told is replaced, and a notification wakes reading again', { timeout: 60_000 }, async (t) => {
  // The poll cannot deliver anything within the test: only a notification can.
  const outbox = await outboxBehindProxy(t, { pollIntervalMs: 600_000, listenHeartbeatMs: 500 });
  const { proxy, seen, quiet, lines, received, insert } = outbox;

  // Before the cut: a notification delivers.
  await eventually(() => assert.ok(seen.listens >= 1));
  await quiet();
  await insert(1);
  await eventually(() => assert.deepEqual(received, [1]));
  await quiet();

  const before = seen.listens;
  proxy.partition();
  // Old code kept the LISTEN connection cut off until TCP's keepalive gave up (about two hours).
  await eventually(() => assert.ok(seen.listens > before, 'no LISTEN on a new connection after the cut: notifications stay lost until TCP gives up'), {
    timeoutMs: 20_000,
  });
  assert.ok(
    lines.some((line) => line.includes('the LISTEN connection did not answer a heartbeat')),
    `no line says the LISTEN connection was given up: ${lines.join('')}`,
  );
  // The read that follows a new LISTEN is over: only the notification can bring the next row.
  await quiet();
  await insert(2);
  await eventually(() => assert.deepEqual(received, [1, 2]), { timeoutMs: 10_000 });
  await outbox.empty();
});

test('outbox: a read does not wait on an idle connection cut off without either end being told; it reads on a new one', { timeout: 60_000 }, async (t) => {
  // Only the poll reads after the cut (the LISTEN connection, cut off too, is not checked
  // within the test): its first read takes the idle connection the reads before it used.
  const outbox = await outboxBehindProxy(t, { pollIntervalMs: 500, listenHeartbeatMs: 600_000 });
  const { proxy, quiet, lines, received, insert } = outbox;

  await insert(1);
  await eventually(() => assert.deepEqual(received, [1]));
  await quiet();
  proxy.partition();
  await insert(2);
  // Old code waited for the BEGIN's reply for statementTimeoutMs plus connectTimeoutMs.
  await eventually(() => assert.deepEqual(received, [1, 2], 'the read after the cut is still waiting on a connection cut off'), { timeoutMs: 20_000 });
  assert.ok(
    lines.some((line) => line.includes('cannot read') && line.includes('no reply to BEGIN')),
    `no line says a read gave its connection up: ${lines.join('')}`,
  );
  await outbox.empty();
});
