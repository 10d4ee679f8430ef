// How long a network cut off keeps the postgres sink waiting. A cut tells neither end: a
// statement whose reply it swallowed waited for pg's reply timeout (statementTimeoutMs plus
// connectTimeoutMs), and the TCP keepalive Ferry turned on probed only after the kernel's two
// hours of silence. The connections now have TCP probe them once silent for 30 s,
// which the server's kernel answers however long its statement runs; and the sink's first
// statement on a connection from the pool (reading the table's columns) gets connectTimeoutMs.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { type TestContext, test } from 'node:test';
import pg from 'pg';
import pino from 'pino';
import { Subject } from 'rxjs';
import { createDelivery, type Delivery } from '../../src/core/delivery.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { poolSettings } from '../../src/postgres/connection.ts';
import { type PgPool, PostgresPools } from '../../src/postgres/pools.ts';
import { createPostgresSink, postgresSink } from '../../src/postgres/sink.ts';
import { capturedLogger } from '../harness/log-lines.ts';
import { partitionProxy } from '../harness/partition-proxy.ts';
import { testSchema } from '../harness/pg-schema.ts';

/** Messages `{ seq }` handed to a sink, each handed again 100 ms after a retryable nack (as the buffer does). */
function feed() {
  const input = new Subject<Delivery>();
  const acked: number[] = [];
  const nacks: string[] = [];
  const send = (seq: number, envelope = createEnvelope({ topic: 't', payload: JSON.stringify({ seq }), origin: { source: 'mqtt', clientId: 'd', qos: 1 } })) =>
    input.next(
      createDelivery(envelope, {
        onAck: () => acked.push(seq),
        onNack: (error) => {
          nacks.push(error.message);
          setTimeout(() => send(seq, envelope), 100);
        },
      }),
    );
  return { input, acked, nacks, send };
}

async function until(check: () => boolean | Promise<boolean>, ms: number): Promise<boolean> {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    if (await check()) return true;
    await sleep(20);
  }
  return check();
}

test('postgres sink: reading the columns on an idle connection cut off gives it up after connectTimeoutMs, and reads on a new one', { timeout: 60_000 }, async (t) => {
  const db = await testSchema(t);
  const proxy = await partitionProxy({ host: new URL(db.url).hostname, port: Number(new URL(db.url).port || 5432) });
  t.after(() => proxy.close());
  await db.query(`CREATE TABLE ${db.name}.readings (id uuid PRIMARY KEY, seq int)`);
  const url = new URL(db.url);
  url.host = `127.0.0.1:${proxy.port}`;
  const config = postgresSink.schema.parse({
    url: url.toString(),
    table: `${db.name}.readings`,
    columns: { id: '${id}', seq: '${payload.seq}' },
    batchTimeMs: 5,
    connectTimeoutMs: 1000,
    // pg's reply timeout (this plus connectTimeoutMs) outlasts the test.
    statementTimeoutMs: 120_000,
  });
  const opened: pg.Pool[] = [];
  const pools = new PostgresPools((options) => {
    const pool = new pg.Pool({ ...options });
    opened.push(pool);
    pool.on('acquire', (client) => client.on('error', () => {}));
    return pool as unknown as PgPool;
  });
  // An idle connection in the pool the sink will use (another component of the gateway with
  // the same settings left it there), then the path under it is cut.
  const settings = poolSettings(config, 'ferry', '.', 'test');
  const lease = pools.acquire(settings, () => {});
  t.after(() => lease.release());
  const client = await (await lease.pool).connect();
  client.release();
  assert.equal(opened[0]?.idleCount, 1);
  proxy.partition();

  const { logger } = capturedLogger('warn');
  const sink = createPostgresSink(config, { logger, counters: new CounterRegistry(), dataDir: '/nonexistent', bridge: 'cut', sourceFilters: [] }, pools);
  const { input, acked, nacks, send } = feed();
  const subscription = sink(input).subscribe();
  t.after(() => subscription.unsubscribe());
  const started = performance.now();
  send(1);
  // Old code waited for the columns' reply for statementTimeoutMs plus connectTimeoutMs.
  assert.ok(await until(() => acked.length === 1, 15_000), `not written 15 s after the sink started (nacks: ${nacks.join('; ')})`);
  const took = performance.now() - started;
  t.diagnostic(`written ${Math.round(took)} ms after the sink started`);
  assert.ok(
    nacks.some((m) => m.includes('no reply to the description')),
    `no nack says the description was given up: ${nacks.join('; ')}`,
  );
  assert.ok(took < 10_000, `written ${Math.round(took)} ms after the sink started`);
  const rows = await db.query<{ seq: number }>(`SELECT seq FROM ${db.name}.readings`);
  assert.deepEqual(rows, [{ seq: 1 }]);
});

test('postgres sink: a statement that runs longer than connectTimeoutMs is not given up', { timeout: 60_000 }, async (t) => {
  const db = await testSchema(t);
  await db.query(`CREATE TABLE ${db.name}.readings (id uuid PRIMARY KEY, seq int)`);
  await db.query(`CREATE FUNCTION ${db.name}.slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(4); RETURN NEW; END $$`);
  await db.query(`CREATE TRIGGER slow BEFORE INSERT ON ${db.name}.readings FOR EACH ROW EXECUTE FUNCTION ${db.name}.slow()`);
  const config = postgresSink.schema.parse({
    url: db.url,
    table: `${db.name}.readings`,
    columns: { id: '${id}', seq: '${payload.seq}' },
    batchTimeMs: 5,
    connectTimeoutMs: 1000,
    statementTimeoutMs: 20_000,
  });
  const sink = postgresSink.create(config, { logger: pino({ level: 'silent' }), counters: new CounterRegistry(), dataDir: '/nonexistent', bridge: 'slow', sourceFilters: [] });
  const { input, acked, nacks, send } = feed();
  const subscription = sink(input).subscribe();
  t.after(() => subscription.unsubscribe());
  send(1);
  assert.ok(await until(() => acked.length === 1, 15_000), 'not written');
  assert.deepEqual(nacks, []);
});

/** The sink of netns-postgres-sink.ts, in a network namespace of its own, and what it reported. */
async function sinkInNamespace(t: TestContext, env: Record<string, string>) {
  const child: ChildProcess = spawn('unshare', ['-n', process.execPath, '--import', 'tsx', 'test/harness/netns-postgres-sink.ts'], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  t.after(() => {
    if (child.exitCode === null) child.kill();
  });
  const reports: Record<string, unknown>[] = [];
  child.on('message', (message) => reports.push(message as Record<string, unknown>));
  const exited = once(child, 'exit');
  const find = (key: string, value?: unknown) => reports.find((r) => key in r && (value === undefined || r[key] === value));
  const wait = async (key: string, value: unknown, ms: number) => {
    const ok = await Promise.race([until(() => find(key, value) !== undefined, ms), exited.then(() => false)]);
    assert.ok(ok, `the sink in its namespace never reported ${key} ${String(value)} (needs root and unshare; reports: ${JSON.stringify(reports)})`);
    return find(key, value) as Record<string, unknown> & { at: number };
  };
  return { child, reports, wait };
}

test('postgres sink: a statement whose replies a network cut off drops is given up after 30 s of silence and ten keepalive probes, not after statementTimeoutMs', {
  timeout: 120_000,
}, async (t) => {
  const db = await testSchema(t);
  await db.query(`CREATE TABLE ${db.name}.readings (id uuid PRIMARY KEY, seq int)`);
  // Message 1's insert runs 30 s, once (a sequence is not rolled back): the path is cut while the
  // server runs it, so that the client's TCP has nothing unacknowledged and only waits.
  await db.query(`CREATE SEQUENCE ${db.name}.once`);
  await db.query(
    `CREATE FUNCTION ${db.name}.slow() RETURNS trigger LANGUAGE plpgsql AS
     $$ BEGIN IF NEW.seq = 1 AND nextval('${db.name}.once') = 1 THEN PERFORM pg_sleep(30); END IF; RETURN NEW; END $$`,
  );
  await db.query(`CREATE TRIGGER slow BEFORE INSERT ON ${db.name}.readings FOR EACH ROW EXECUTE FUNCTION ${db.name}.slow()`);
  const socketDir = ((await db.query<{ d: string }>('SHOW unix_socket_directories'))[0]?.d ?? '/var/run/postgresql').split(',')[0]?.trim();
  const url = new URL(db.url);
  const { child, wait } = await sinkInNamespace(t, {
    SOCKET: `${socketDir}/.s.PGSQL.${url.port || 5432}`,
    USER: decodeURIComponent(url.username) || (await db.query<{ u: string }>('SELECT current_user AS u'))[0]?.u || 'postgres',
    DATABASE: url.pathname.slice(1),
    TABLE: `${db.name}.readings`,
    // pg's reply timeout is 62 s: the old bound.
    STATEMENT_TIMEOUT_MS: '60000',
    CONNECT_TIMEOUT_MS: '2000',
  });
  await wait('ready', true, 20_000);
  child.send('send');
  await wait('acked', 0, 10_000);
  child.send('send');
  const sleeping = async () => (await db.query(`SELECT 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query LIKE '%${db.name}%readings%'`)).length > 0;
  assert.ok(await until(sleeping, 10_000), "message 1's insert never ran");
  child.send('cut');
  const cut = await wait('cut', true, 5_000);
  const nack = await wait('nacked', 1, 55_000);
  const after = nack.at - cut.at;
  t.diagnostic(`nacked ${Math.round(after)} ms after the cut: ${String(nack.message)}`);
  // 30 s of silence, then ten probes a second apart; old code waited for pg's reply timeout.
  assert.ok(after < 50_000, `the insert was given up ${Math.round(after)} ms after the cut`);
  assert.equal(nack.code, 'UPSTREAM_UNAVAILABLE');
  child.send('restore');
  // Written again once the path is back (after the transaction left behind ends: its insert
  // still sleeps, and its row's lock holds the new insert of the same id).
  const restored = await wait('restored', true, 5_000);
  const written = await wait('acked', 1, 60_000);
  t.diagnostic(`written ${Math.round(written.at - restored.at)} ms after the path came back`);
  child.send('exit');
  const rows = await db.query<{ seq: number }>(`SELECT seq FROM ${db.name}.readings ORDER BY seq`);
  assert.deepEqual(rows, [{ seq: 0 }, { seq: 1 }]);
});
