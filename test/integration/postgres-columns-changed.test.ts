// A table whose columns change under a running postgres sink (int4 widened to int8, a column
// made text or jsonb, a NOT NULL dropped, a column dropped and added again, a column narrowed):
// the sink read the columns once, at startup, and went on converting by the old types, so
// messages that fit only the new ones were dead-lettered (or their batch retried) until a
// restart. A refusal that a changed table could explain now has the columns read again, at
// most about once a second while they are found unchanged, and the batch written by the new
// types; a message that is bad for good is still dead-lettered alone.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import { Subject, lastValueFrom, toArray } from 'rxjs';
import { type Delivery, createDelivery } from '../../src/core/delivery.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import { isFerryError } from '../../src/core/errors.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { QUIET_MS } from '../../src/postgres/insert-plans.ts';
import { postgresSink } from '../../src/postgres/sink.ts';
import { type TestSchema, testSchema } from '../harness/pg-schema.ts';

type Outcome = 'acked' | Error | undefined;

/** A running sink into `<schema>.r`, mapping each column to `${payload.<column>}` (and `id` to `${id}`). */
function running(db: TestSchema, columns: readonly string[], options: Record<string, unknown>) {
  const counters = new CounterRegistry();
  const logged: string[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => logged.push(String(JSON.parse(line).msg)) });
  const config = { url: db.url, table: `${db.name}.r`, columns: { id: '${id}', ...Object.fromEntries(columns.map((c) => [c, `\${payload.${c}}`])) }, batchTimeMs: 20, ...options };
  const sink = postgresSink.create(postgresSink.schema.parse(config), { logger, counters, dataDir: '/nonexistent', bridge: 'test', sourceFilters: ['devices/+/t'] });
  const input = new Subject<Delivery>();
  const ended = lastValueFrom(sink(input).pipe(toArray())).then(
    () => undefined,
    (error: unknown) => error,
  );
  /** Sends the payloads one after another without waiting; resolves with how each was settled. */
  const send = async (...payloads: object[]): Promise<Outcome[]> => {
    const outcomes: Outcome[] = payloads.map(() => undefined);
    payloads.forEach((payload, i) => {
      const envelope = createEnvelope({ topic: 'devices/d1/t', payload: JSON.stringify(payload), origin: { source: 'test', clientId: 'd1', qos: 1 } });
      input.next(createDelivery(envelope, { onAck: () => (outcomes[i] = 'acked'), onNack: (error) => (outcomes[i] = error) }));
    });
    for (let i = 0; i < 200 && outcomes.includes(undefined); i++) await new Promise((r) => setTimeout(r, 25));
    return outcomes;
  };
  const stop = async () => {
    input.complete();
    return ended;
  };
  return { send, stop, counters, logged, reloads: () => counters.get(`postgres.columns.reloaded{bridge=test,table=${db.name}.r}`) ?? 0 };
}

function assertRefused(outcome: Outcome, reason: RegExp): void {
  assert.ok(isFerryError(outcome, 'MESSAGE_INVALID') && !outcome.retryable, `dead-lettered alone: ${String(outcome)}`);
  assert.match(outcome.message, reason);
}

// One batch at a time; and batches pipelined on a pool of one connection (the columns are then
// read on the connection the writer holds, or once it gave it back).
const setups = [
  { concurrency: 1, batchSize: 500 },
  { concurrency: 4, batchSize: 1, poolSize: 1 },
];

for (const setup of setups) {
  test(`postgres sink (concurrency ${setup.concurrency}, batchSize ${setup.batchSize}): columns widened or loosened while it runs take the messages that fit only the new types; a bad message is still dead-lettered alone`, {
    timeout: 60_000,
  }, async (t) => {
    const db = await testSchema(t);
    await db.query(`CREATE TABLE ${db.name}.r (id uuid PRIMARY KEY, k int NOT NULL, n int4, at timestamptz, v int NOT NULL DEFAULT 0, name varchar(8), doc text, w int)`);
    const sink = running(db, ['k', 'n', 'at', 'v', 'name', 'doc', 'w'], setup);
    t.after(() => sink.stop());
    assert.deepEqual(await sink.send({ k: 1, n: 1, at: '2026-01-01T00:00:00Z', v: 1, name: 'short', doc: 'x', w: 1 }), ['acked']);

    // Found by the sink's conversion: a number beyond int4, a value missing while v was NOT NULL.
    await db.query(`ALTER TABLE ${db.name}.r ALTER COLUMN n TYPE int8, ALTER COLUMN v DROP NOT NULL, ALTER COLUMN name TYPE varchar(64)`);
    const outcomes = await sink.send(
      { k: 2, n: 9_000_000_000, v: 2 },
      { k: 3 },
      { k: 4, name: 'twenty characters...', v: 4 }, // longer than varchar(8): the server applies the column's length
    );
    assert.deepEqual(outcomes, ['acked', 'acked', 'acked']);
    assert.equal(sink.reloads(), 1);
    // Found by the server: its cast to timestamptz refuses the row (22007).
    await db.query(`ALTER TABLE ${db.name}.r ALTER COLUMN at TYPE text`);
    assert.deepEqual(await sink.send({ k: 6, at: 'not a time', v: 6 }), ['acked']);
    assert.equal(sink.reloads(), 2);
    // Found by the server: it refuses the insert of text into jsonb (42804); by the sink's
    // conversion to the int dropped, or by the server's cast to it (22P02): a word.
    await db.query(`ALTER TABLE ${db.name}.r ALTER COLUMN doc TYPE jsonb USING to_jsonb(doc), DROP COLUMN w, ADD COLUMN w text`);
    const last = await sink.send({ k: 7, doc: { a: 1 }, v: 7 }, { k: 8, w: 'eight', v: 8 }, { k: 5, n: 'not a number', v: 5 });
    assert.deepEqual(last.slice(0, 2), ['acked', 'acked']);
    assertRefused(last[2], /column n \(bigint\) from '\$\{payload\.n\}': its value "not a number" is not an integer/);
    // The change read once; the bad message may have the columns read once more (found unchanged)
    // when its batch was converted after that read.
    assert.ok([3, 4].includes(sink.reloads()), `read ${sink.reloads()} times`);

    assert.deepEqual(await db.query(`SELECT k, n::text, at, v, name, doc::text, w FROM ${db.name}.r WHERE k > 1 ORDER BY k`), [
      { k: 2, n: '9000000000', at: null, v: 2, name: null, doc: null, w: null },
      { k: 3, n: null, at: null, v: null, name: null, doc: null, w: null },
      { k: 4, n: null, at: null, v: 4, name: 'twenty characters...', doc: null, w: null },
      { k: 6, n: null, at: 'not a time', v: 6, name: null, doc: null, w: null },
      { k: 7, n: null, at: null, v: 7, name: null, doc: '{"a": 1}', w: null },
      { k: 8, n: null, at: null, v: 8, name: null, doc: null, w: 'eight' },
    ]);
    assert.equal(sink.counters.get('postgres.messages.rejected{bridge=test}'), 1, 'only the bad message counted as refused');
    for (const change of ['n: integer -> bigint', 'at: timestamp with time zone -> text', 'doc: text -> jsonb'])
      assert.ok(
        sink.logged.some((line) => line.includes(change) && / changed \(.*\); values are converted to the new types from now on$/.test(line)),
        `${change}:\n${sink.logged.join('\n')}`,
      );

    // Messages bad for good, each a batch of its own (with batchSize 1), refused by the sink's
    // conversion (words for n) and by the server (too long for name): the catalog is read at
    // most once more for each reason, found unchanged, and not again for a while; every one is
    // dead-lettered alone.
    await sink.send({ k: 9, n: 'x', v: 9 });
    const before = sink.reloads();
    const bad = await sink.send(...Array.from({ length: 6 }, (_, i) => ({ k: 10 + i, v: 10 + i, ...(i % 2 === 0 ? { n: 'x' } : { name: 'x'.repeat(65) }) })));
    for (const outcome of bad) assert.ok(isFerryError(outcome, 'MESSAGE_INVALID'), String(outcome));
    assert.ok(sink.reloads() - before <= 2, `the catalog read ${sink.reloads() - before} times for 6 bad messages in a row`);
    assert.deepEqual(await db.query(`SELECT count(*)::int AS n FROM ${db.name}.r`), [{ n: 7 }]);
  });
}

test('postgres sink: a column narrowed while it runs refuses, alone and by the new type, a value that fit the old one', { timeout: 30_000 }, async (t) => {
  const db = await testSchema(t);
  await db.query(`CREATE TABLE ${db.name}.r (id uuid PRIMARY KEY, k int, n int8, name varchar(64))`);
  const sink = running(db, ['k', 'n', 'name'], { concurrency: 4 });
  t.after(() => sink.stop());
  assert.deepEqual(await sink.send({ k: 1, n: 3_000_000_000, name: 'twenty characters...' }), ['acked']);
  await db.query(`ALTER TABLE ${db.name}.r ALTER COLUMN n TYPE int4 USING 0, ALTER COLUMN name TYPE varchar(8) USING ''`);
  const outcomes = await sink.send({ k: 2, n: 3_000_000_000 }, { k: 3, name: 'twenty characters...' }, { k: 4, n: 4, name: 'short' });
  assertRefused(outcomes[0], /column n \(integer\) from '\$\{payload\.n\}': its value 3000000000 is out of the range of int4/);
  assertRefused(outcomes[1], /SQLSTATE 22001: value too long for type character varying\(8\)/);
  assert.equal(outcomes[2], 'acked');
  assert.deepEqual(await db.query(`SELECT k, n, name FROM ${db.name}.r ORDER BY k`), [
    { k: 1, n: 0, name: '' },
    { k: 4, n: 4, name: 'short' },
  ]);
});

test('postgres sink: messages bad for good just before a change hide it only for refusals of the same kind, and for a second at most', { timeout: 30_000 }, async (t) => {
  const db = await testSchema(t);
  await db.query(`CREATE TABLE ${db.name}.r (id uuid PRIMARY KEY, k int, n int4, at timestamptz)`);
  const sink = running(db, ['k', 'n', 'at'], { concurrency: 4 });
  t.after(() => sink.stop());
  // Words for n, and a word for at: the columns are read, found unchanged, and those kinds of
  // refusal do not have them read again for a second.
  const bad = await sink.send({ k: 1, n: 'x' }, { k: 2, at: 'whenever' });
  for (const outcome of bad) assert.ok(isFerryError(outcome, 'MESSAGE_INVALID'), String(outcome));
  await db.query(`ALTER TABLE ${db.name}.r ALTER COLUMN n TYPE int8, ALTER COLUMN at TYPE text`);
  // A number beyond int4 is another kind of refusal: the change is found at once (that of at with it).
  assert.deepEqual(await sink.send({ k: 3, n: 9_000_000_000 }), ['acked']);
  assert.deepEqual(await sink.send({ k: 4, at: 'whenever' }), ['acked']);
  assert.deepEqual(await db.query(`SELECT k, n::text, at FROM ${db.name}.r ORDER BY k`), [
    { k: 3, n: '9000000000', at: null },
    { k: 4, n: null, at: 'whenever' },
  ]);

  // The same kind of refusal within the second after a read that found nothing is not looked
  // into (a word for n, refused as soon as the column is made text, is dead-lettered unless the
  // machine was slow); after it, it is.
  assertRefused((await sink.send({ k: 5, n: 'y' }))[0], /its value "y" is not an integer/);
  await db.query(`ALTER TABLE ${db.name}.r ALTER COLUMN n TYPE text`);
  const soon = (await sink.send({ k: 6, n: 'z' }))[0];
  assert.ok(soon === 'acked' || isFerryError(soon, 'MESSAGE_INVALID'), String(soon));
  await new Promise((r) => setTimeout(r, QUIET_MS));
  assert.deepEqual(await sink.send({ k: 7, n: 'w' }), ['acked']);
  assert.deepEqual(await db.query(`SELECT n FROM ${db.name}.r WHERE k = 7`), [{ n: 'w' }]);
});
