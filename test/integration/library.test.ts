import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import pino from 'pino';
import { Subject } from 'rxjs';
import { ConfigError } from '../../src/config/issues.ts';
import type { Delivery } from '../../src/core/delivery.ts';
import { sql } from 'kysely';
import { durableBuffer } from '../../src/lib/buffer.ts';
import { toKafka } from '../../src/lib/kafka.ts';
import { postgresDatabase } from '../../src/lib/postgres.ts';
import { redisClient } from '../../src/lib/redis.ts';
import { readHistory, sqliteDatabase } from '../../src/lib/sqlite.ts';
import { startGateway } from '../../src/lib/gateway.ts';
import { trackedDeliveries } from '../conformance/deliveries.ts';
import { eventually } from '../harness/eventually.ts';
import { mosquittoPub } from '../harness/mosquitto.ts';
import { testSchema } from '../harness/pg-schema.ts';
import { randomName, requireService } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-library-');
const quiet = { logger: pino({ level: 'silent' }) };
const text = (d: Delivery) => Buffer.from(d.envelope.payload).toString();

test('durableBuffer acks upstream once stored, hands messages on in order, again after a nack, and again after a restart until acked', async () => {
  const dir = tempDir();
  const input = new Subject<Delivery>();
  const tracked = trackedDeliveries(5);
  const received: Delivery[] = [];
  let subscription = input.pipe(durableBuffer({ dir, policy: { retryInitialMs: 10 } }, quiet)).subscribe((d) => received.push(d));
  for (const d of tracked.deliveries) input.next(d);
  // Upstream is acknowledged when the buffer committed, whatever downstream does.
  await tracked.settled();
  assert.equal(tracked.acked.length, 5);
  await eventually(() => assert.equal(received.length, 5));
  assert.deepEqual(received.map(text), tracked.deliveries.map(text));
  // Downstream takes the first two, refuses the third: the third and what follows come again.
  received[0]?.ack();
  received[1]?.ack();
  received[2]?.nack(new Error('downstream busy'));
  received[3]?.ack();
  received[4]?.ack();
  await eventually(() => assert.ok(received.length >= 6));
  assert.equal(text(received[5] as Delivery), text(tracked.deliveries[2] as Delivery));
  // Stopped with messages unacked: a new subscription (a restarted process) has them again.
  subscription.unsubscribe();
  const again: Delivery[] = [];
  subscription = new Subject<Delivery>().pipe(durableBuffer({ dir, policy: { retryInitialMs: 10 } }, quiet)).subscribe((d) => again.push(d));
  try {
    await eventually(() => assert.ok(again.length >= 1));
    assert.equal(text(again[0] as Delivery), text(tracked.deliveries[2] as Delivery));
  } finally {
    subscription.unsubscribe();
  }
});

test('options are checked on creation with the messages of ferry validate; the caller object is not changed', () => {
  const config = { brokers: '127.0.0.1:9092', topic: 'bad topic!', acks: 'some' };
  const before = JSON.stringify(config);
  assert.throws(
    () => toKafka(config as never, quiet),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.equal(error.code, 'CONFIG_INVALID');
      const lines = error.issues.map((i) => `${i.file}: ${i.path}: ${i.message}`);
      assert.ok(
        lines.some((l) => /^kafka: topic: .*topic 'bad topic!'/.test(l)),
        lines.join('\n'),
      );
      assert.ok(
        lines.some((l) => l.startsWith('kafka: acks: ')),
        lines.join('\n'),
      );
      return true;
    },
  );
  assert.equal(JSON.stringify(config), before);
  assert.throws(() => durableBuffer({ dir: '' }), ConfigError);
});

test('startGateway with a config object: ready, a device message in the history bridge, status, reload, stop', async () => {
  const base = tempDir();
  const { writeFileSync, mkdirSync } = await import('node:fs');
  mkdirSync(join(base, 'bridges'));
  writeFileSync(join(base, 'bridges/telemetry.yaml'), "name: telemetry\nfrom: { mqtt: { topics: ['devices/+/telemetry'] } }\nto: [{ history: {} }]\n");
  const gateway = await startGateway({
    config: { gateway: { name: 'lib' }, mqtt: { host: '127.0.0.1', allowAnonymous: 'loopback' }, log: { level: 'silent' }, bridges: ['bridges'] },
    baseDir: base,
    overrides: { mqttPort: 0, adminPort: 0 },
  });
  try {
    await gateway.ready;
    assert.ok(gateway.mqttPort > 0);
    const pub = await mosquittoPub(`mqtt://127.0.0.1:${gateway.mqttPort}`, 'devices/lib-1/telemetry', 'hello', { qos: 1, clientId: 'lib-1' });
    assert.equal(pub.code, 0, pub.stderr);
    await eventually(() =>
      assert.deepEqual(
        readHistory(join(base, 'data')).map((r) => [r.clientId, Buffer.from(r.payload).toString()]),
        [['lib-1', 'hello']],
      ),
    );
    assert.deepEqual(
      gateway.status().bridges.map((b) => b.name),
      ['telemetry'],
    );
    const reload = await gateway.reload();
    assert.equal(reload.ok, true);
  } finally {
    assert.equal(await gateway.stop(), true);
  }
  await assert.rejects(startGateway({ config: { mqtt: { port: 'x' } }, baseDir: base }), (error: unknown) => error instanceof ConfigError && /mqtt\.port/.test(error.message));
});

interface Tables {
  readings: { device: string; celsius: number };
}

test('the toolkit handles: redisClient, postgresDatabase and sqliteDatabase against the real servers, checked on creation, closed by their owner', async (t) => {
  // Redis: the handler's tools.redis client, on a connection shared by equal settings.
  const redis = redisClient({ url: await requireService('redis') }, { name: 'cache' });
  const key = randomName('ferry:test:library:');
  try {
    assert.equal(await redis.setJson(key, { site: 'plant-north' }, { ttlMs: 60_000 }), true);
    assert.deepEqual(await redis.getJson(key), { site: 'plant-north' });
    assert.equal(await redis.set(key, 'other', { nx: true }), false);
    assert.equal(await redis.del(key), 1);
  } finally {
    await redis.close();
  }
  await assert.rejects(redis.get(key), /redis 'cache' .*connection closed/);
  assert.throws(
    () => redisClient({ url: 'http://localhost' }),
    (error: unknown) => error instanceof ConfigError && /redis: url: a redis:\/\/ or rediss:\/\/ URL/.test(error.message),
  );

  // PostgreSQL: a typed Kysely instance on the process's pool, its connections named.
  const pg = await testSchema(t);
  await pg.query(`CREATE TABLE ${pg.name}.readings (device text NOT NULL, celsius double precision NOT NULL)`);
  const application = randomName('lib-');
  const db = postgresDatabase<Tables>({ url: pg.url }, { name: application });
  try {
    await db.withSchema(pg.name).insertInto('readings').values({ device: "o'brien", celsius: 21.5 }).execute();
    const rows = await db.withSchema(pg.name).selectFrom('readings').selectAll().execute();
    assert.deepEqual(rows, [{ device: "o'brien", celsius: 21.5 }]);
    const named = await pg.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1', [`ferry:${application}`]);
    assert.ok((named[0]?.n ?? 0) >= 1, 'connections carry the name given, as the sink and the source name theirs');
  } finally {
    await db.destroy();
  }
  await eventually(async () =>
    assert.equal((await pg.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1', [`ferry:${application}`]))[0]?.n, 0),
  );
  assert.throws(() => postgresDatabase({ url: 'mysql://x' }), ConfigError);

  // SQLite: a file relative to the directory given, in WAL mode.
  const dir = tempDir();
  const local = sqliteDatabase<Tables>({ file: 'app.db', synchronous: 'normal' }, { dir });
  try {
    await sql`CREATE TABLE readings (device text NOT NULL, celsius real NOT NULL)`.execute(local);
    await local.insertInto('readings').values({ device: 'd1', celsius: 3 }).execute();
    assert.deepEqual(await local.selectFrom('readings').selectAll().execute(), [{ device: 'd1', celsius: 3 }]);
    const mode = await sql<{ journal_mode: string }>`PRAGMA journal_mode`.execute(local);
    assert.equal(mode.rows[0]?.journal_mode, 'wal');
  } finally {
    await local.destroy();
  }
  assert.ok(existsSync(join(dir, 'app.db')));
  assert.throws(() => sqliteDatabase({ file: '' }), ConfigError);
});
