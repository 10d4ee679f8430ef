// The outbox source against the real server: a row a sink refuses for good is tried once more
// by itself, then settled (deleted or marked), counted and logged, and never holds back the rows
// behind it; and settling rows finds them through the id column's index, not by reading the
// whole table. Found by review: such a row was read again for ever, first in every batch,
// each time doubling the backoff, and `id::text = ANY(...)` scanned the table at each commit.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import type { Delivery } from '../../src/core/delivery.ts';
import { FerryError } from '../../src/core/errors.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { createPostgresSource, postgresSource } from '../../src/postgres/outbox-source.ts';
import { eventually } from '../harness/eventually.ts';
import { type TestSchema, testSchema } from '../harness/pg-schema.ts';
import { randomName } from '../harness/services.ts';

const OUTBOX = (schema: string) =>
  `CREATE TABLE ${schema}.cmds (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, device text NOT NULL, payload jsonb NOT NULL DEFAULT '{}', delivered_at timestamptz)`;

/** The source over `cmds`, each delivery handed to `onDelivery`; its log lines (warn and up) and counters kept; `stop()` waits for its last commit. */
function outbox(db: TestSchema, config: Record<string, unknown>, onDelivery: (d: Delivery) => void) {
  const logs: { level: number; msg: string; id?: string }[] = [];
  const name = randomName('ferry_outbox_');
  const logger = pino({ name, level: 'warn' }, { write: (line: string) => logs.push(JSON.parse(line)) });
  const counters = new CounterRegistry();
  const stops: Promise<void>[] = [];
  const source = createPostgresSource(
    postgresSource.schema.parse({ url: db.url, table: `${db.name}.cmds`, keyColumn: 'device', retryBackoffMs: 50, pollIntervalMs: 100, stopTimeoutMs: 500, ...config }),
    { logger, counters, dataDir: '/nonexistent', bridge: 'test', afterStop: (work) => stops.push(work) },
  );
  const subscription = source.subscribe(onDelivery);
  return {
    name,
    logs,
    counters,
    stop: async () => {
      subscription.unsubscribe();
      await Promise.all(stops);
    },
  };
}

/** What the `devices` sink does with a key that would not stay one topic level. */
const refusedForGood = (key: string) => new FerryError('MESSAGE_REJECTED', `devices sink: '${key}' would not stay one topic level`, { retryable: false });

test('outbox: a row refused for good is delivered again by itself, then deleted, counted and logged; the rows behind it are not held back', { timeout: 30_000 }, async (t) => {
  const db = await testSchema(t);
  await db.query(OUTBOX(db.name));
  // One batch: a good row, one refused every time, one refused only with others (a sink's
  // batch refused for another message's fault), another good row.
  await db.query(`INSERT INTO ${db.name}.cmds (device) VALUES ('ok-1'), ('pump/1'), ('flaky'), ('ok-2')`);
  const seen: string[] = [];
  const reading = outbox(db, {}, (d) => {
    const key = d.envelope.key as string;
    const before = seen.filter((k) => k === key).length;
    seen.push(key);
    if (key.includes('/') || (key === 'flaky' && before === 0)) d.nack(refusedForGood(key));
    else d.ack();
  });
  t.after(reading.stop);
  await eventually(async () => assert.deepEqual(await db.query(`SELECT device FROM ${db.name}.cmds`), []));
  assert.deepEqual(seen, ['ok-1', 'pump/1', 'flaky', 'ok-2', 'pump/1', 'flaky']);
  assert.equal(reading.counters.get('postgres.outbox.refused{bridge=test}'), 1);
  const errors = reading.logs.filter((l) => l.level >= 50);
  assert.equal(errors.length, 1, JSON.stringify(reading.logs));
  assert.equal(errors[0]?.id, '2');
  assert.match(errors[0]?.msg ?? '', /row 2 refused for good; .*'pump\/1' would not stay one topic level/);

  // Refused rows do not slow reading down: each later command comes at once, refused ones
  // among them settled after their one retry.
  for (let round = 1; round <= 4; round++) {
    const started = Date.now();
    await db.query(`INSERT INTO ${db.name}.cmds (device) VALUES ($1), ($2)`, [`bad/${round}`, `good-${round}`]);
    await eventually(() => assert.ok(seen.includes(`good-${round}`)), { timeoutMs: 2000 });
    assert.ok(Date.now() - started < 1500, `round ${round}: ${Date.now() - started} ms`);
  }
  await eventually(async () => assert.deepEqual(await db.query(`SELECT device FROM ${db.name}.cmds`), []));
  assert.equal(reading.counters.get('postgres.outbox.refused{bridge=test}'), 5);
});

test('outbox, delivered: mark: acked rows and rows refused for good are marked through the primary key, without reading the whole table', { timeout: 30_000 }, async (t) => {
  const db = await testSchema(t);
  await db.query(OUTBOX(db.name));
  // The index docs/postgres.md suggests for `mark`: the read finds the unmarked rows through it.
  await db.query(`CREATE INDEX ON ${db.name}.cmds (id) WHERE delivered_at IS NULL`);
  await db.query(`INSERT INTO ${db.name}.cmds (device, delivered_at) SELECT 'old', now() FROM generate_series(1, 20000)`);
  await db.query(`INSERT INTO ${db.name}.cmds (device) SELECT 'new-' || n FROM generate_series(1, 5) AS n`);
  await db.query(`INSERT INTO ${db.name}.cmds (device) VALUES ('bad/1')`);
  await db.query(`ANALYZE ${db.name}.cmds`);
  const scans = async () =>
    (await db.query<{ seq: number; idx: number }>(`SELECT seq_scan::int AS seq, idx_scan::int AS idx FROM pg_stat_user_tables WHERE relid = '${db.name}.cmds'::regclass`))[0];
  const before = await scans();
  const seen: string[] = [];
  const reading = outbox(db, { delivered: 'mark', markColumn: 'delivered_at', batchSize: 2 }, (d) => {
    const key = d.envelope.key as string;
    seen.push(key);
    if (key.includes('/')) d.nack(refusedForGood(key));
    else d.ack();
  });
  t.after(reading.stop);
  await eventually(() => assert.equal(seen.filter((k) => k === 'bad/1').length, 2));
  await reading.stop();
  // A backend's counts reach pg_stat_user_tables by the time it has left pg_stat_activity.
  await eventually(async () => assert.deepEqual(await db.query(`SELECT pid FROM pg_stat_activity WHERE application_name = $1`, [reading.name]), []));
  const after = await scans();
  assert.ok((after?.idx ?? 0) > (before?.idx ?? 0), 'the reads and marks used an index');
  assert.equal(after?.seq, before?.seq, 'no statement read the whole table');
  assert.deepEqual(await db.query(`SELECT device FROM ${db.name}.cmds WHERE delivered_at IS NULL`), []);
  assert.equal(reading.counters.get('postgres.outbox.refused{bridge=test}'), 1);
});
