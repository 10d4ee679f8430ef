// One pool per distinct connection per process: sinks with the same settings share it, it
// closes with the last of them, and its connections carry the gateway's name.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import pg from 'pg';
import pino from 'pino';
import { Subject, lastValueFrom, toArray } from 'rxjs';
import type { Delivery } from '../../src/core/delivery.ts';
import { isFerryError } from '../../src/core/errors.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { type PoolOptions, poolSettings } from '../../src/postgres/connection.ts';
import { type PgPool, PostgresPools } from '../../src/postgres/pools.ts';
import { createPostgresSink, postgresSink } from '../../src/postgres/sink.ts';
import { trackedDeliveries } from '../conformance/deliveries.ts';
import { testSchema } from '../harness/pg-schema.ts';
import { randomName } from '../harness/services.ts';

test('postgres pools: sinks with equal settings share one pool, closed by the last; its connections carry the gateway name', async (t) => {
  const db = await testSchema(t);
  await db.query(`CREATE TABLE ${db.name}.a (id uuid PRIMARY KEY); CREATE TABLE ${db.name}.b (id uuid PRIMARY KEY)`);
  const made: PoolOptions[] = [];
  const ended: PoolOptions[] = [];
  const pools = new PostgresPools((options) => {
    made.push(options);
    const pool = new pg.Pool({ ...options });
    const end: () => Promise<void> = pool.end.bind(pool);
    return Object.assign(pool, {
      end: async () => {
        ended.push(options);
        await end();
      },
    }) as unknown as PgPool;
  });
  const gateway = randomName('gw-');
  const logger = pino({ level: 'silent', name: gateway });
  const sinkFor = (bridge: string, table: string, poolSize = 4) =>
    createPostgresSink(
      postgresSink.schema.parse({ url: db.url, table: `${db.name}.${table}`, columns: { id: '${id}' }, poolSize, batchTimeMs: 5 }),
      { logger, counters: new CounterRegistry(), dataDir: '/nonexistent', bridge },
      pools,
    );
  const start = (sink: ReturnType<typeof sinkFor>) => {
    const input = new Subject<Delivery>();
    const tracked = trackedDeliveries(3);
    const done = lastValueFrom(sink(input).pipe(toArray()));
    for (const d of tracked.deliveries) input.next(d);
    return { input, tracked, done };
  };
  const one = start(sinkFor('one', 'a'));
  const two = start(sinkFor('two', 'b'));
  await one.tracked.settled();
  await two.tracked.settled();
  assert.equal(made.length, 1, 'one pool for both');
  assert.equal(pools.size, 1);
  assert.equal(made[0]?.application_name, gateway);
  const active = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1', [gateway]);
  assert.ok((active[0]?.n ?? 0) >= 1);

  // Another pool size is another pool.
  const three = start(sinkFor('three', 'a', 2));
  await three.tracked.settled();
  assert.equal(made.length, 2);
  three.input.complete();
  await three.done;

  one.input.complete();
  await one.done;
  assert.equal(ended.length, 1, 'the shared pool stays while a sink uses it');
  two.input.complete();
  await two.done;
  await sleep(50);
  assert.equal(ended.length, 2);
  assert.equal(pools.size, 0);
  for (let i = 0; i < 50; i++) {
    const left = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1', [gateway]);
    if (left[0]?.n === 0) return;
    await sleep(100);
  }
  assert.fail('connections left open after the last sink stopped');
});

test('postgres pools: TLS required of a server that has none fails the batch for now, saying why', async () => {
  const tracked = trackedDeliveries(1);
  const sink = createPostgresSink(
    postgresSink.schema.parse({ url: 'postgres://postgres@127.0.0.1:5432/test', ssl: { mode: 'require' }, table: 'readings', columns: { id: '${id}' }, batchTimeMs: 5 }),
    { logger: pino({ level: 'silent' }), counters: new CounterRegistry(), dataDir: '/nonexistent', bridge: 'test' },
  );
  const input = new Subject<Delivery>();
  const done = lastValueFrom(sink(input).pipe(toArray()));
  input.next(tracked.deliveries[0] as Delivery);
  input.complete();
  await done;
  const error = [...tracked.nacked.values()][0];
  assert.ok(isFerryError(error) && error.retryable, String(error));
  assert.match(error.message, /does not support SSL/);
});

test('postgres pools: a connection that fails while a component holds it does not end the process; its next statement fails, and the pool replaces it', async (t) => {
  const db = await testSchema(t);
  const pools = new PostgresPools();
  const config = postgresSink.schema.parse({ url: db.url, table: 'x', columns: { id: '${id}' } });
  const lease = pools.acquire(poolSettings(config, 'ferry', '.', 'test'), () => {});
  t.after(() => lease.release());
  const pool = await lease.pool;
  const held = await pool.connect();
  const pid = (await held.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid;
  // The server ends it (as a restart does) while nobody waits on it: pg emits the failure as an 'error' event.
  await db.query('SELECT pg_terminate_backend($1)', [pid]);
  await sleep(300);
  await assert.rejects(held.query('SELECT 1'));
  held.release(new Error('its connection failed'));
  const again = await pool.connect();
  assert.notEqual((await again.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid, pid);
  again.release();
});
