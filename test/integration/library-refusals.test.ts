// What the library refuses, and says so: a history that is not there (better-sqlite3's errors
// named no path), a second reader of one durable buffer log (both received every message), and
// the pool postgresDatabase shares with toPostgres (their connection names differed, and the
// name is part of the pool's key, so they never shared it as documented).
import assert from 'node:assert/strict';
import { symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { sql } from 'kysely';
import pino from 'pino';
import { Subject, lastValueFrom, toArray } from 'rxjs';
import type { Delivery } from '../../src/core/delivery.ts';
import { isFerryError } from '../../src/core/errors.ts';
import { durableBuffer } from '../../src/lib/buffer.ts';
import { kafkaProducer } from '../../src/lib/kafka.ts';
import { postgresDatabase, toPostgres } from '../../src/lib/postgres.ts';
import { readHistory } from '../../src/lib/sqlite.ts';
import { processPools } from '../../src/postgres/pools.ts';
import { trackedDeliveries } from '../conformance/deliveries.ts';
import { eventually } from '../harness/eventually.ts';
import { closedPort } from '../harness/net.ts';
import { testSchema } from '../harness/pg-schema.ts';
import { randomName } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-library-refusals-');
const quiet = { logger: pino({ level: 'silent' }) };
const text = (d: Delivery) => Buffer.from(d.envelope.payload).toString();

test('readHistory of a directory that is not there, or holds no history.db, throws a FerryError naming the path', () => {
  const root = tempDir();
  const none = join(root, 'none');
  assert.throws(
    () => readHistory(none),
    (error: unknown) => isFerryError(error, 'STORAGE_FAILED') && error.message === `readHistory: no history at ${join(none, 'history.db')}: the directory ${none} does not exist`,
  );
  assert.throws(
    () => readHistory(root),
    (error: unknown) => isFerryError(error, 'STORAGE_FAILED') && error.message.startsWith(`readHistory: no history at ${join(root, 'history.db')}: ${root} has no history.db`),
  );
  const file = join(root, 'a-file');
  writeFileSync(file, '');
  assert.throws(
    () => readHistory(file),
    (error: unknown) => isFerryError(error, 'STORAGE_FAILED') && error.message.endsWith(`: ${file} is not a directory`),
  );
});

test('a second durableBuffer subscription to the log of one dir and name in the process is refused; another name or a later one is not', { timeout: 30_000 }, async () => {
  const dir = join(tempDir(), 'buffer');
  const link = join(tempDir(), 'link');
  const input = new Subject<Delivery>();
  const first: Delivery[] = [];
  const one = input.pipe(durableBuffer({ dir, name: 'orders' }, quiet)).subscribe((d) => first.push(d));
  symlinkSync(dir, link);
  try {
    for (const path of [dir, link]) {
      let refused: unknown;
      const second = new Subject<Delivery>().pipe(durableBuffer({ dir: path, name: 'orders' }, quiet)).subscribe({ error: (error) => (refused = error) });
      await sleep(100);
      second.unsubscribe();
      assert.ok(isFerryError(refused, 'CONFIG_INVALID'), `${path}: ${String(refused)}`);
      assert.match(refused.message, /durableBuffer 'orders' in .* is already subscribed in this process: a log has one reader at a time/);
    }
    // Another name is another log of the same file.
    const other = new Subject<Delivery>().pipe(durableBuffer({ dir, name: 'other' }, quiet)).subscribe({ error: (error) => assert.fail(error) });
    other.unsubscribe();

    const tracked = trackedDeliveries(3);
    for (const d of tracked.deliveries) input.next(d);
    await tracked.settled();
    await eventually(() => assert.equal(first.length, 3));
    assert.deepEqual(first.map(text), tracked.deliveries.map(text));
  } finally {
    one.unsubscribe();
  }
  // Once the first let go, the log has a reader again: what was not acked comes again.
  const again: Delivery[] = [];
  const two = new Subject<Delivery>().pipe(durableBuffer({ dir, name: 'orders' }, quiet)).subscribe((d) => again.push(d));
  try {
    await eventually(() => assert.equal(again.length, 3));
  } finally {
    two.unsubscribe();
  }
});

test('postgresDatabase and toPostgres with the same settings and name share one pool, its connections named ferry:<name>', { timeout: 30_000 }, async (t) => {
  const pg = await testSchema(t);
  await pg.query(`CREATE TABLE ${pg.name}.readings (id uuid PRIMARY KEY)`);
  const name = randomName('lib-');
  const before = processPools.size;
  const db = postgresDatabase({ url: pg.url }, { name });
  try {
    await sql`SELECT 1`.execute(db);
    assert.equal(processPools.size, before + 1);
    const input = new Subject<Delivery>();
    const written = lastValueFrom(input.pipe(toPostgres({ url: pg.url, table: `${pg.name}.readings`, columns: { id: '${id}' }, batchTimeMs: 5 }, { name }), toArray()));
    const tracked = trackedDeliveries(2);
    for (const d of tracked.deliveries) input.next(d);
    await tracked.settled();
    assert.equal(tracked.acked.length, 2);
    assert.equal(processPools.size, before + 1, 'the sink took its connections from the database pool');
    input.complete();
    await written;
    const named = await pg.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1', [`ferry:${name}`]);
    assert.ok((named[0]?.n ?? 0) >= 1, 'connections carry the name');
  } finally {
    await db.destroy();
  }
  await eventually(() => assert.equal(processPools.size, before));
});

// A send to a broker that is down rejects once kafkajs' retries are spent (docs/library.md,
// One-off sends): it never waits for close(). Passed before the docs said how long that is.
test('kafkaProducer.send to a broker that refuses connections rejects after its retries, naming the cause, without close()', { timeout: 60_000 }, async () => {
  const brokers = `127.0.0.1:${await closedPort()}`;
  for (const [retries, withinMs] of [
    [0, 5_000],
    [undefined, 30_000],
  ] as const) {
    const producer = kafkaProducer({ brokers, ...(retries === undefined ? {} : { retries }) }, quiet);
    const started = Date.now();
    try {
      await assert.rejects(
        producer.send('commands', 'reboot'),
        (error: unknown) =>
          isFerryError(error, 'UPSTREAM_UNAVAILABLE') && error.retryable && error.message.includes(`cannot connect to ${brokers}`) && /ECONNREFUSED/.test(error.message),
      );
      const took = Date.now() - started;
      assert.ok(took < withinMs, `retries ${retries ?? 'default'}: rejected after ${took} ms`);
    } finally {
      await producer.close();
    }
  }
});
