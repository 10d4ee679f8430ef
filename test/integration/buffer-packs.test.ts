// The log keeps a run of one bridge's messages as one row, a pack (src/buffer/packs.ts). What is
// checked here against a real buffer database: a sink's backlog is counted from the packs' index
// (and the meta blob of a pack it begins or ends inside), deletions from the front and from the
// middle of packs keep every other message and its seq, and a buffer an earlier version wrote
// (a row a message) is moved into packs once, when it is opened for writing, with its seqs.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import pino from 'pino';
import { bufferPath, openBuffer } from '../../src/buffer/open.ts';
import { BUFFER_SCHEMA, migrate } from '../../src/buffer/schema.ts';
import { BufferStore, type StoredMessage } from '../../src/buffer/store.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import { openSqlite } from '../../src/sqlite/connection.ts';
import { random } from '../harness/random.ts';
import { legacyEnvelope as envelope, legacyBuffer } from '../harness/legacy-buffer.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-buffer-packs-');

/** A buffer with 300 messages of bridge `b` (payloads of 1 to 300 bytes) and a sink `out` confirmed through the 100th. */
function filled(dir: string): { store: BufferStore; seqs: number[] } {
  const { store } = openBuffer(dir, pino({ level: 'silent' }));
  store.registerBridge('b', ['out', 'late']);
  const seqs = store.append(Array.from({ length: 300 }, (_, i) => ({ bridge: 'b', envelope: envelope(i) })));
  store.commit('b', 'out', seqs[99] as number);
  return { store, seqs };
}

const pendingOut = (store: BufferStore) => {
  const sink = store.stats('b').sinks.find((s) => s.sink === 'out');
  return { pending: sink?.pending, pendingBytes: sink?.pendingBytes };
};
// Bytes of the messages 101 to 300: payloads of 101 to 300 bytes.
const EXPECTED = { pending: 200, pendingBytes: (101 + 300) * 100 };

const sizes = (messages: Iterable<StoredMessage>) => [...messages].map((m) => m.envelope.payload.byteLength);

test("a sink's backlog is counted from the packs' index alone, and from the meta blob of the pack its cursor is inside", () => {
  const dir = tempDir();
  const { store } = filled(dir);
  assert.deepEqual(pendingOut(store), EXPECTED);
  store.close();
  const db = new Database(bufferPath(dir), { readonly: true });
  const plan = db
    .prepare('EXPLAIN QUERY PLAN SELECT coalesce(sum(last - first + 1), 0), coalesce(sum(bytes), 0) FROM packs WHERE bridge = ? AND last > ? AND last <= ? AND first > ?')
    .all('b', 100, 1000, 100) as { detail: string }[];
  assert.equal(db.prepare('SELECT count(*) FROM packs').pluck().get() as number, 1, 'one commit of one bridge: one pack');
  db.close();
  assert.match(plan.map((p) => p.detail).join('\n'), /COVERING INDEX packs_bridge_last/);
});

test('deleting from the front moves the floor inside a pack, from the middle notes the messages as settled: every other message keeps its seq and its bytes', () => {
  const dir = tempDir();
  const { store, seqs } = filled(dir);
  try {
    const at = (i: number) => seqs[i] as number;
    // The front: purge the first 150 (the cursor of `out` is at the 100th; `late` is at the start).
    assert.deepEqual(store.purgeSome('b', at(149), 1_000), { messages: 150, bytes: (1 + 150) * 75 });
    assert.deepEqual(sizes(store.read('b', 0, 3)), [151, 152, 153]);
    assert.equal(store.read('b', 0, 1)[0]?.seq, at(150));
    assert.equal(store.stats('b').oldestAt, 1_700_000_000_000 + 150);
    // The middle: settle messages 200-209 and 250 ahead of a cursor (the bridge's only sink).
    store.registerBridge('b', ['out']);
    const ahead = store.read('b', at(199), 60).filter((m) => (m.seq >= at(200) && m.seq <= at(209)) || m.seq === at(250));
    store.settleAhead('b', 'out', ahead, []);
    const left = [...store.iterateMessages('b')];
    const expected = Array.from({ length: 150 }, (_, k) => 150 + k).filter((i) => !((i >= 200 && i <= 209) || i === 250));
    assert.deepEqual(
      left.map((m) => m.seq),
      expected.map(at),
    );
    assert.deepEqual(
      sizes(left),
      expected.map((i) => i + 1),
    );
    const bytes = expected.reduce((n, i) => n + i + 1, 0);
    assert.deepEqual(store.usage('b'), { messages: expected.length, bytes });
    assert.deepEqual({ messages: store.stats('b').messages, bytes: store.stats('b').bytes }, { messages: expected.length, bytes });
    // A read from inside a piece, and across the gap.
    assert.deepEqual(
      store.read('b', at(198), 3).map((m) => m.seq),
      [at(199), at(210), at(211)],
    );
    // Expiry from the front, by time: everything created before the 260th.
    store.expire('b', 1_700_000_000_000 + 260);
    assert.equal(store.read('b', 0, 1)[0]?.seq, at(260));
    assert.equal(store.usage('b').messages, 40);
  } finally {
    store.close();
  }
});

test('a buffer an earlier version wrote is moved into packs once, when it is opened for writing, keeping every seq; a reader before that is told so; an earlier version cannot open it after', () => {
  const dir = tempDir();
  const path = bufferPath(dir);
  const written = legacyBuffer(path);

  const reader = () => new BufferStore(openSqlite(path, { readonly: true }));
  assert.throws(reader, /written by an earlier version of Ferry: start the gateway/);

  const lines: { msg: string; messages?: number }[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => lines.push(JSON.parse(line)) });
  const { store } = openBuffer(dir, logger);
  try {
    assert.equal(lines.find((l) => l.msg.startsWith('buffer: moving the messages of an earlier version'))?.messages, 2_489);
    assert.equal(lines.find((l) => l.msg === 'buffer: messages moved into packs')?.messages, 2_489);
    const kept = written.map((w, i) => ({ ...w, seq: i + 1 })).filter((w) => w.seq <= 2490 && w.seq !== 1500);
    for (const bridge of ['a', 'b']) {
      const mine = kept.filter((w) => w.bridge === bridge);
      const read = [...store.iterateMessages(bridge)];
      assert.deepEqual(
        read.map((m) => m.seq),
        mine.map((w) => w.seq),
      );
      assert.deepEqual(
        read.map((m) => ({ ...m.envelope, payload: Buffer.from(m.envelope.payload) })),
        mine.map((w) => ({ ...w.e, payload: Buffer.from(w.e.payload) })),
      );
    }
    assert.equal(store.cursor('a', 'out'), 400);
    assert.equal(store.stats('a').sinks[0]?.pending, kept.filter((w) => w.bridge === 'a' && w.seq > 400).length);
    // Seqs go on after the highest given out, not the highest left.
    const [next] = store.append([{ bridge: 'a', envelope: envelope(9_999) }]);
    assert.equal(next, 2_501);
  } finally {
    store.close();
  }
  // Opened again: nothing to move; a reader reads it.
  lines.length = 0;
  openBuffer(dir, logger).store.close();
  assert.deepEqual(lines, []);
  const after = reader();
  assert.equal(after.stats('b').messages, 500);
  after.close();
  // An earlier version fails at its schema, rather than starting beside the packs on an empty log.
  const earlier = new Database(path);
  assert.throws(
    () =>
      earlier.exec(
        'CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY AUTOINCREMENT); CREATE INDEX IF NOT EXISTS messages_bridge_seq_bytes ON messages (bridge, seq, length(payload))',
      ),
    /views may not be indexed/,
  );
  earlier.close();
});

test('a conversion stopped in the middle (a kill, a power cut) goes on at the next open where it stopped: every message once, under its seq', () => {
  const dir = tempDir();
  const path = bufferPath(dir);
  const written = legacyBuffer(path);
  const db = openSqlite(path);
  db.exec(BUFFER_SCHEMA);
  // Stopped after the second transaction of 700 rows had committed.
  assert.throws(
    () =>
      migrate(
        db,
        (moved) => {
          if (moved >= 1_400) throw new Error('killed');
        },
        700,
      ),
    /killed/,
  );
  assert.equal(db.prepare('SELECT coalesce(sum(last - first + 1), 0) FROM packs').pluck().get(), 1_400);
  db.close();
  const { store } = openBuffer(dir, pino({ level: 'silent' }));
  try {
    const read = [...store.iterateMessages()];
    const kept = written.map((w, i) => ({ ...w, seq: i + 1 })).filter((w) => w.seq <= 2490 && w.seq !== 1500);
    assert.deepEqual(
      read.map((m) => [m.seq, m.bridge, m.envelope.id]),
      kept.map((w) => [w.seq, w.bridge, w.e.id]),
    );
  } finally {
    store.close();
  }
});

test('appends, purges, expiry, drop-oldest and settling in any order: counts, reads and the log match a plain list of the messages', () => {
  const dir = tempDir();
  const { store } = openBuffer(dir, pino({ level: 'silent' }));
  const next = random(11);
  // The model: bridge b's messages in seq order, each with its payload's size and time.
  let model: { seq: number; bytes: number; at: number }[] = [];
  let time = 1_700_000_000_000;
  const count = (store as unknown as { packs: { count(bridge: string, lo: number, hi: number): { messages: number; bytes: number } } }).packs;
  try {
    store.registerBridge('b', ['out']);
    store.registerBridge('c', ['out']);
    for (let step = 0; step < 300; step++) {
      const op = next(10);
      if (op < 4 || model.length === 0) {
        // An append of up to 1,500 messages (more than a pack holds), some of bridge c between them.
        const n = 1 + next(1_500);
        const entries = Array.from({ length: n }, () => {
          time += next(3);
          const bridge = next(5) === 0 ? 'c' : 'b';
          return { bridge, envelope: createEnvelope({ topic: 't', payload: Buffer.alloc(next(60)), origin: { source: 'test' }, timestamp: time }) };
        });
        const seqs = store.append(entries);
        entries.forEach((e, i) => {
          if (e.bridge === 'b') model.push({ seq: seqs[i] as number, bytes: e.envelope.payload.byteLength, at: e.envelope.timestamp });
        });
      } else if (op === 4) {
        const through = (model[next(model.length)] as { seq: number }).seq;
        const limit = 1 + next(2_000);
        store.purgeSome('b', through, limit);
        model = model.filter((m, i) => m.seq > through || i >= limit);
      } else if (op === 5) {
        // Expiry, in one step or at most `limit` messages (as the upkeep does in steps).
        const before = (model[next(model.length)] as { at: number }).at;
        const limit = next(2) === 0 ? -1 : 1 + next(500);
        store.expire('b', before, limit);
        const stop = model.findIndex((m) => m.at >= before);
        const expired = stop < 0 ? model.length : stop;
        model = model.slice(limit < 0 ? expired : Math.min(expired, limit));
      } else if (op === 6) {
        const n = next(700); // 0 too: nothing dropped
        store.dropOldest('b', n);
        model = model.slice(n);
      } else {
        // Settled ahead of the cursor (at 0): runs and single messages anywhere in the log.
        const from = next(model.length);
        const picked = model.slice(from, from + next(1_200)).filter(() => next(3) !== 0);
        store.settleAhead(
          'b',
          'out',
          picked.map((m) => ({ seq: m.seq, bridge: 'b', envelope: createEnvelope({ topic: 't', payload: '', origin: { source: 'test' } }) })),
          [],
        );
        const gone = new Set(picked.map((m) => m.seq));
        model = model.filter((m) => !gone.has(m.seq));
      }
      const bytes = model.reduce((n, m) => n + m.bytes, 0);
      const where = `step ${step} (operation ${op})`;
      assert.deepEqual(store.usage('b'), { messages: model.length, bytes }, `kept usage, ${where}`);
      const stats = store.stats('b');
      assert.deepEqual(
        { messages: stats.messages, bytes: stats.bytes, oldestAt: stats.oldestAt },
        { messages: model.length, bytes, oldestAt: model[0]?.at ?? null },
        `stats, ${where}`,
      );
      if (model.length === 0) continue;
      const lo = (model[next(model.length)] as { seq: number }).seq - next(2);
      const hi = lo + next(3_000);
      const inside = model.filter((m) => m.seq > lo && m.seq <= hi);
      assert.deepEqual(count.count('b', lo, hi), { messages: inside.length, bytes: inside.reduce((n, m) => n + m.bytes, 0) }, `count (${lo}, ${hi}], ${where}`);
      const limit = 1 + next(1_500);
      assert.deepEqual(
        store.read('b', lo, limit).map((m) => [m.seq, m.envelope.payload.byteLength, m.envelope.timestamp]),
        model
          .filter((m) => m.seq > lo)
          .slice(0, limit)
          .map((m) => [m.seq, m.bytes, m.at]),
        `read after ${lo}, ${where}`,
      );
    }
    assert.deepEqual(
      [...store.iterateMessages('b')].map((m) => m.seq),
      model.map((m) => m.seq),
    );
    // Nothing asked, nothing dropped.
    assert.deepEqual(store.dropOldest('b', 0), { messages: 0, bytes: 0 });
    assert.deepEqual(store.purgeSome('b', Number.MAX_SAFE_INTEGER, 0), { messages: 0, bytes: 0 });
    assert.equal(store.usage('b').messages, model.length);
  } finally {
    store.close();
  }
});
