// The history kept in packs: a model test of appends, messages delivered again, trimming to
// `keep` and reads, and the conversion of a history written by an earlier version.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import pino from 'pino';
import { from } from 'rxjs';
import { createEnvelope, type Envelope, isUuidV7 } from '../../src/core/envelope.ts';
import { convertStep } from '../../src/sqlite/history-legacy.ts';
import { HISTORY_SCHEMA, HistoryReader, type HistoryRow, HistoryWriter, INSERT_PACK, convertEarlierHistory, historyPath } from '../../src/sqlite/history-store.ts';
import { random } from '../harness/random.ts';
import { trackedDeliveries } from '../conformance/deliveries.ts';
import { historySink } from '../../src/sqlite/history-sink.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-history-packs-');

/** The history's schema of earlier versions (a row a message), as they created it. */
const LEGACY_SCHEMA = `
CREATE TABLE IF NOT EXISTS history (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  bridge TEXT NOT NULL,
  topic TEXT NOT NULL,
  client_id TEXT,
  qos INTEGER,
  payload BLOB NOT NULL,
  received_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS history_bridge_seq ON history (bridge, seq);
CREATE TABLE IF NOT EXISTS history_counts (bridge TEXT PRIMARY KEY, rows INTEGER NOT NULL) WITHOUT ROWID;
`;

interface Kept {
  readonly seq: number;
  readonly bridge: string;
  readonly envelope: Envelope;
}

const plain = (rows: HistoryRow[]) => rows.map((r) => ({ ...r, payload: r.payload.toString('hex') }));

test('the history in packs keeps what a list of rows would: appends, deliveries again, keep, reopening, and reads by bridge, topic and seq', async () => {
  const dir = tempDir();
  const next = random(11);
  const model = new Map<string, Kept[]>([
    ['a', []],
    ['b', []],
  ]);
  let seq = 0;
  let n = 0;
  /** Messages with an id of a source's template (in no order), which may be sent again once trimmed. */
  const templated = new Map<string, Envelope[]>([
    ['a', []],
    ['b', []],
  ]);
  const message = (bridge: string): Envelope => {
    n += 1;
    // Payloads of a few bytes to a few KiB: some packs close at 1 MiB rather than 1,024 messages.
    const payload = Buffer.alloc(next(4) === 0 ? 2000 + next(3000) : 1 + next(40), n % 251);
    const envelope = createEnvelope({
      topic: `devices/d${next(3)}/${next(2) === 0 ? 'telemetry' : 'Telemetry'}/t`,
      payload,
      origin: { source: 'test', clientId: `d${n % 7}`, qos: next(2) as 0 | 1 },
      // A third from a messageId template, in no order.
      ...(next(3) === 0 ? { id: `d${n % 7}:${next(1_000_000_000)}` } : {}),
    });
    if (!isUuidV7(envelope.id)) templated.get(bridge)?.push(envelope);
    return envelope;
  };
  let writer = new HistoryWriter(dir, 'normal');
  try {
    for (let step = 0; step < 120; step++) {
      const bridge = next(2) === 0 ? 'a' : 'b';
      const kept = model.get(bridge) as Kept[];
      const keep = [40, 700, 2500][next(3)] as number;
      const batch: Envelope[] = Array.from({ length: next(5) === 0 ? 900 + next(900) : 1 + next(60) }, () => message(bridge));
      // Some of what the bridge keeps, delivered again (after a restart, or a batch retried),
      // anywhere in the batch; and a message twice in one batch.
      if (kept.length > 0 && next(3) === 0) {
        for (let i = next(20); i > 0; i--) batch.splice(next(batch.length + 1), 0, (kept[next(kept.length)] as Kept).envelope);
      }
      // A template's id sent again, kept or trimmed (trimmed, it is kept again).
      const sent = templated.get(bridge) as Envelope[];
      if (sent.length > 0 && next(3) === 0) {
        for (let i = next(20); i > 0; i--) batch.splice(next(batch.length + 1), 0, sent[next(sent.length)] as Envelope);
      }
      if (next(6) === 0) batch.push(batch[next(batch.length)] as Envelope);
      if (next(6) === 0) batch.push(batch.at(-1) as Envelope);
      await writer.append(bridge, batch, keep);
      const ids = new Set(kept.map((k) => k.envelope.id));
      for (const envelope of batch) {
        if (ids.has(envelope.id)) continue;
        ids.add(envelope.id);
        seq += 1;
        kept.push({ seq, bridge, envelope });
      }
      kept.splice(0, Math.max(0, kept.length - keep));
      if (next(10) === 0) {
        writer.close();
        writer = new HistoryWriter(dir, 'normal');
      }

      const reader = new HistoryReader(dir);
      try {
        const expected = (rows: Kept[]) =>
          rows.map(({ seq, bridge, envelope: e }) => ({
            seq,
            id: e.id,
            bridge,
            topic: e.topic,
            clientId: e.origin.clientId,
            qos: e.origin.qos,
            payload: Buffer.from(e.payload).toString('hex'),
            receivedAt: e.timestamp,
          }));
        assert.deepEqual(plain(reader.latest({ bridge, limit: 1_000_000 })), expected(kept), `step ${step}: all of bridge ${bridge}`);
        const all = [...(model.get('a') as Kept[]), ...(model.get('b') as Kept[])].sort((x, y) => x.seq - y.seq);
        const limit = 1 + next(300);
        const after = next(seq + 1);
        const prefix = ['devices/d1/', 'devices/d2/T', 'devices/', 'nothing/'][next(4)] as string;
        const matching = all.filter((k) => k.seq > after && k.envelope.topic.startsWith(prefix));
        assert.deepEqual(
          plain(reader.latest({ limit, afterSeq: after, topicPrefix: prefix })),
          expected(matching.slice(-limit)),
          `step ${step}: after ${after}, ${prefix}, ${limit}`,
        );
        // The oldest instead (ferry history --follow reads so, a round at a time).
        assert.deepEqual(
          plain(reader.latest({ limit, afterSeq: after, topicPrefix: prefix, oldest: true })),
          expected(matching.slice(0, limit)),
          `step ${step}: the oldest after ${after}, ${prefix}, ${limit}`,
        );
      } finally {
        reader.close();
      }
      const db = new Database(historyPath(dir), { readonly: true });
      try {
        assert.equal(db.prepare('SELECT rows FROM history_counts WHERE bridge = ?').pluck().get(bridge), kept.length, `step ${step}: kept count`);
      } finally {
        db.close();
      }
    }
  } finally {
    writer.close();
  }
});

/** A history.db as an earlier version left it; returns its messages (in seq order, 3,000 made) and its row count. */
function legacyHistory(dir: string): { envelopes: Envelope[]; rows: number } {
  const legacy = new Database(historyPath(dir));
  legacy.exec(LEGACY_SCHEMA);
  const insert = legacy.prepare('INSERT INTO history (id, bridge, topic, client_id, qos, payload, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)');
  const envelopes: Envelope[] = [];
  for (let i = 0; i < 3000; i++) {
    // Every seventh from a messageId template (2996 among them, delivered again below).
    const e = createEnvelope({
      topic: `devices/d${i % 3}/telemetry/t`,
      payload: `m${i}`,
      origin: { source: 'mqtt', clientId: `d${i % 3}`, qos: 1 },
      ...(i % 7 === 0 ? { id: `d${i % 3}:${i}` } : {}),
    });
    envelopes.push(e);
    // Bridges in runs of varying length; client id and QoS missing on some (a Kafka source's messages).
    insert.run(e.id, (i >> 4) % 3 === 0 ? 'b' : 'a', e.topic, i % 10 === 0 ? null : e.origin.clientId, i % 10 === 0 ? null : 1, Buffer.from(e.payload), e.timestamp);
  }
  // Trimmed as the earlier writer did: the oldest of a bridge, and the newest seq gone too.
  legacy.exec("DELETE FROM history WHERE bridge = 'a' AND seq <= 500; DELETE FROM history WHERE seq = 3000");
  legacy.exec('INSERT INTO history_counts SELECT bridge, count(*) FROM history GROUP BY bridge');
  const rows = legacy.prepare('SELECT count(*) FROM history').pluck().get() as number;
  legacy.close();
  return { envelopes, rows };
}

/** Reads of a history: everything, a bridge after a seq, a topic prefix, and one in the wrong case. */
function readAll(dir: string) {
  const reader = new HistoryReader(dir);
  try {
    return [
      reader.latest({ limit: 100_000 }),
      reader.latest({ bridge: 'b', limit: 7, afterSeq: 100 }),
      reader.latest({ limit: 50, topicPrefix: 'devices/d1' }),
      reader.latest({ limit: 5, topicPrefix: 'DEVICES/' }),
      reader.latest({ bridge: 'b', limit: 7, afterSeq: 100, oldest: true }),
      reader.latest({ limit: 50, topicPrefix: 'devices/d1', oldest: true }),
    ].map(plain);
  } finally {
    reader.close();
  }
}

test('a history of an earlier version is read as it is, converted in steps with its seqs, and refused by that version afterwards', async () => {
  const dir = tempDir();
  const { envelopes, rows } = legacyHistory(dir);
  const before = readAll(dir);
  assert.equal(before[0]?.length, rows, 'the reads of the unconverted file');
  assert.equal(before[1]?.[0]?.seq, 2986, 'b after seq 100, newest 7: the last of its run of seqs 2977-2992');
  assert.equal(before[3]?.length, 0, 'topics are matched case-sensitively');

  // A conversion cut short (a crash) after two steps: the earlier table is read whole meanwhile.
  const cut = new Database(historyPath(dir));
  cut.exec(HISTORY_SCHEMA);
  const insertPack = cut.prepare(INSERT_PACK);
  assert.equal(convertStep(cut, insertPack, 700), 700);
  assert.equal(convertStep(cut, insertPack, 700), 700);
  cut.close();
  assert.deepEqual(readAll(dir), before, 'the reads in the middle of the conversion');

  // The history sink's way: the rest, a step at a time.
  let told: number | undefined;
  const converted = await convertEarlierHistory(dir, (messages) => (told = messages));
  assert.equal(told, rows);
  assert.equal(converted?.messages, rows);
  assert.deepEqual(readAll(dir), before, 'the same messages with the same seqs after the conversion');
  assert.equal(await convertEarlierHistory(dir), undefined, 'nothing left to convert');

  const writer = new HistoryWriter(dir, 'normal', { converting: () => assert.fail('converted already') });
  try {
    // New messages take seqs after every seq given out, the deleted newest one included.
    const fresh = createEnvelope({ topic: 'devices/d9/telemetry/t', payload: 'new', origin: { source: 'mqtt' } });
    await writer.append('a', [...envelopes.slice(2993, 2998), fresh], 100_000);
    const after = readAll(dir)[0] ?? [];
    assert.equal(after.length, rows + 1, 'the messages of the converted history are recognised when delivered again');
    assert.deepEqual(after.at(-1)?.seq, 3001);
  } finally {
    writer.close();
  }
  const db = new Database(historyPath(dir));
  try {
    assert.equal(db.prepare('SELECT rows FROM history_counts WHERE bridge = ?').pluck().get('a'), (before[0] ?? []).filter((r) => r.bridge === 'a').length + 1);
    assert.throws(() => db.exec(LEGACY_SCHEMA), /views may not be indexed/, 'an earlier version fails on the converted file');
    assert.throws(() => db.prepare('SELECT seq, id FROM history').all(), /no such column/);
  } finally {
    db.close();
  }
});

test("a writer opened on an earlier version's history converts all of it first", async () => {
  const dir = tempDir();
  const { rows } = legacyHistory(dir);
  const before = readAll(dir);
  let told: number | undefined;
  const writer = new HistoryWriter(dir, 'normal', { converting: (messages) => (told = messages) });
  writer.close();
  assert.equal(told, rows);
  assert.deepEqual(readAll(dir), before);
});

test('the history sink converts an earlier history before its first write, says so in the log, and then writes after it', async () => {
  const dir = tempDir();
  const { rows } = legacyHistory(dir);
  const lines: { msg: string; messages?: number }[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => lines.push(JSON.parse(line)) });
  const sink = historySink.create(historySink.schema.parse({}), { logger, counters: new CounterRegistry(), dataDir: dir, bridge: 'a' });
  const tracked = trackedDeliveries(3);
  const subscription = sink(from(tracked.deliveries)).subscribe();
  try {
    await tracked.settled();
    assert.equal(tracked.acked.length, 3);
  } finally {
    subscription.unsubscribe();
  }
  assert.deepEqual(
    lines.map((l) => [l.msg, l.messages]),
    [
      ['history: converting the history of an earlier version of Ferry (a row a message) into packs', rows],
      ['history: converted into packs', rows],
    ],
  );
  const kept = readAll(dir)[0] ?? [];
  assert.equal(kept.length, rows + 3);
  assert.deepEqual(
    kept.slice(-3).map((r) => r.id),
    tracked.acked,
  );
});
