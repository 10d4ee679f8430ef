// Values the server refuses for reasons outside classes 22 and 23, and types whose cast could
// cut a value: each such message is refused alone (dead-lettered) and its batch-mates are
// written, while a refusal that is the table's (a statement-level trigger) fails the batch
// retryably. Found by review: char(n) kept one character, bit(n) refused every row, and a
// 54000, P0001 or regclass refusal blocked the bridge for ever.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import pino from 'pino';
import { Subject, lastValueFrom, toArray } from 'rxjs';
import { type Delivery, createDelivery } from '../../src/core/delivery.ts';
import { type Envelope, createEnvelope } from '../../src/core/envelope.ts';
import { isFerryError } from '../../src/core/errors.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { postgresSink } from '../../src/postgres/sink.ts';
import { type TestSchema, testSchema } from '../harness/pg-schema.ts';

const FILTERS = ['devices/+/telemetry/#'];

/**
 * Writes one message per payload (topic `devices/<device>/telemetry/t`; a string is the JSON
 * text as sent, anything else is encoded) to `table` in one batch; how each was settled, in order.
 */
async function write(db: TestSchema, table: string, columns: Record<string, string>, messages: readonly { device?: string; payload: unknown }[], concurrency = 4) {
  const counters = new CounterRegistry();
  const sink = postgresSink.create(postgresSink.schema.parse({ url: db.url, table: `${db.name}.${table}`, columns, batchTimeMs: 50, concurrency }), {
    logger: pino({ level: 'silent' }),
    counters,
    dataDir: '/nonexistent',
    bridge: 'test',
    sourceFilters: FILTERS,
  });
  const settled = new Map<Envelope, 'acked' | Error>();
  const envelopes = messages.map((m) =>
    createEnvelope({
      topic: `devices/${m.device ?? 'd1'}/telemetry/t`,
      payload: typeof m.payload === 'string' ? m.payload : JSON.stringify(m.payload),
      origin: { source: 'test', clientId: 'd1', qos: 1 },
    }),
  );
  const input = new Subject<Delivery>();
  const done = lastValueFrom(sink(input).pipe(toArray()));
  for (const envelope of envelopes) input.next(createDelivery(envelope, { onAck: () => settled.set(envelope, 'acked'), onNack: (error) => settled.set(envelope, error) }));
  input.complete();
  await done;
  return { outcomes: envelopes.map((e) => settled.get(e)), counters };
}

function assertRefused(outcome: 'acked' | Error | undefined, reason: RegExp): void {
  assert.ok(isFerryError(outcome, 'MESSAGE_INVALID') && !outcome.retryable, `refused alone, not retried: ${String(outcome)}`);
  assert.match(outcome.message, reason);
}

test('postgres sink: char(n), bit(n) and char(n)[] values are written whole; one too long is refused alone', async (t) => {
  const db = await testSchema(t);
  await db.query(`CREATE TABLE ${db.name}.r (id uuid PRIMARY KEY, n int, country char(2), code character(10), flags bit(3), letters char(2)[])`);
  const columns = { id: '${id}', n: '${payload.n}', country: '${payload.country}', code: '${payload.code}', flags: '${payload.flags}', letters: '${payload.letters}' };
  const { outcomes } = await write(db, 'r', columns, [
    { payload: { n: 1, country: 'DE', code: 'ABCDEFGHIJ', flags: '101', letters: '{ab,c}' } },
    { payload: { n: 2, country: 'DEU' } },
    { payload: { n: 3, flags: '1011' } },
    { payload: { n: 4, code: 'AB' } },
  ]);
  assert.equal(outcomes[0], 'acked');
  assertRefused(outcomes[1], /SQLSTATE 22001: value too long for type character\(2\)/);
  assertRefused(outcomes[2], /SQLSTATE 22026: bit string length 4 does not match type bit\(3\)/);
  assert.equal(outcomes[3], 'acked');
  const rows = await db.query(`SELECT n, country, code, flags::text, letters::text FROM ${db.name}.r ORDER BY n`);
  assert.deepEqual(rows, [
    { n: 1, country: 'DE', code: 'ABCDEFGHIJ', flags: '101', letters: '{ab,"c "}' },
    { n: 4, country: null, code: 'AB        ', flags: null, letters: null },
  ]);
});

test('postgres sink: a value too large for its btree index entry (SQLSTATE 54000) is refused alone; its batch-mates are written', async (t) => {
  const db = await testSchema(t);
  await db.query(`CREATE TABLE ${db.name}.r (id uuid PRIMARY KEY, device text, n int)`);
  await db.query(`CREATE INDEX ON ${db.name}.r (device)`);
  const big = randomBytes(6000).toString('hex'); // incompressible: over a btree entry's 2704 bytes
  for (const concurrency of [1, 4]) {
    const { outcomes, counters } = await write(
      db,
      'r',
      { id: '${id}', device: '${1}', n: '${payload.n}' },
      [{ payload: { n: 1 } }, { device: big, payload: { n: 2 } }, { payload: { n: 3 } }],
      concurrency,
    );
    assert.deepEqual([outcomes[0], outcomes[2]], ['acked', 'acked'], `concurrency ${concurrency}`);
    assertRefused(outcomes[1], /PostgreSQL refused the row: SQLSTATE 54000: index row/);
    assert.equal(counters.get('postgres.messages.rejected{bridge=test}'), 1);
  }
  assert.deepEqual(await db.query(`SELECT n FROM ${db.name}.r ORDER BY n`), [{ n: 1 }, { n: 1 }, { n: 3 }, { n: 3 }]);
});

test("postgres sink: a row a trigger refuses (RAISE EXCEPTION, P0001) is refused alone; a statement trigger's refusal fails the batch retryably", async (t) => {
  const db = await testSchema(t);
  await db.query(`CREATE TABLE ${db.name}.r (id uuid PRIMARY KEY, v int)`);
  await db.query(
    `CREATE FUNCTION ${db.name}.chk() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.v < 0 THEN RAISE EXCEPTION 'negative: %', NEW.v; END IF; RETURN NEW; END $$`,
  );
  await db.query(`CREATE TRIGGER chk BEFORE INSERT ON ${db.name}.r FOR EACH ROW EXECUTE FUNCTION ${db.name}.chk()`);
  const columns = { id: '${id}', v: '${payload.v}' };
  const { outcomes } = await write(db, 'r', columns, [{ payload: { v: 1 } }, { payload: { v: -1 } }, { payload: { v: 2 } }]);
  assert.deepEqual([outcomes[0], outcomes[2]], ['acked', 'acked']);
  assertRefused(outcomes[1], /PostgreSQL refused the row: SQLSTATE P0001: negative: -1/);

  // The table refuses every insert: not the messages' fault, so none is dead-lettered.
  await db.query(`CREATE FUNCTION ${db.name}.closed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'closed for maintenance'; END $$`);
  await db.query(`CREATE TRIGGER closed BEFORE INSERT ON ${db.name}.r FOR EACH STATEMENT EXECUTE FUNCTION ${db.name}.closed()`);
  const closed = await write(db, 'r', columns, [{ payload: { v: 3 } }, { payload: { v: 4 } }]);
  for (const outcome of closed.outcomes) assert.ok(isFerryError(outcome, 'SINK_WRITE_FAILED') && outcome.retryable, String(outcome));
  assert.deepEqual(await db.query(`SELECT v FROM ${db.name}.r ORDER BY v`), [{ v: 1 }, { v: 2 }]);
});

test('postgres sink: a class-42 refusal caused by a value (a regclass naming no table) is refused alone once the insert without rows runs', async (t) => {
  const db = await testSchema(t);
  await db.query(`CREATE TABLE ${db.name}.r (id uuid PRIMARY KEY, n int, target regclass)`);
  for (const concurrency of [1, 4]) {
    const { outcomes } = await write(
      db,
      'r',
      { id: '${id}', n: '${payload.n}', target: '${payload.target}' },
      [{ payload: { n: 1, target: 'pg_class' } }, { payload: { n: 2, target: 'no_such_table' } }, { payload: { n: 3 } }],
      concurrency,
    );
    assert.deepEqual([outcomes[0], outcomes[2]], ['acked', 'acked'], `concurrency ${concurrency}`);
    assertRefused(outcomes[1], /PostgreSQL refused the row: SQLSTATE 42P01: relation "no_such_table" does not exist/);
  }
  assert.deepEqual(await db.query(`SELECT n, target::text FROM ${db.name}.r ORDER BY n`), [
    { n: 1, target: 'pg_class' },
    { n: 1, target: 'pg_class' },
    { n: 3, target: null },
    { n: 3, target: null },
  ]);
});

test('postgres sink: payload numbers a double cannot hold are written as the device wrote them', async (t) => {
  const db = await testSchema(t);
  await db.query(`CREATE TABLE ${db.name}.r (id uuid PRIMARY KEY, big bigint, num numeric, doc jsonb, txt text, f float8)`);
  const columns = { id: '${id}', big: '${payload.big}', num: '${payload.num}', doc: '${payload.doc}', txt: '${payload.txt}', f: '${payload.f}' };
  const { outcomes } = await write(db, 'r', columns, [
    { payload: '{"big":9007199254740993,"num":1e400,"doc":{"x":1e400,"y":12345678901234567890},"txt":18446744073709551615,"f":0.1}' },
    { payload: '{"f":1e400}' },
  ]);
  assert.equal(outcomes[0], 'acked');
  assertRefused(outcomes[1], /SQLSTATE 22003/);
  const rows = await db.query(`SELECT big::text, num::text, doc::text, txt, f FROM ${db.name}.r`);
  assert.deepEqual(rows, [
    { big: '9007199254740993', num: `1${'0'.repeat(400)}`, doc: `{"x": 1${'0'.repeat(400)}, "y": 12345678901234567890}`, txt: '18446744073709551615', f: 0.1 },
  ]);
});
