// The buffer keeps itself: freed space, expiry and recounts are driven inside src/buffer,
// with no caller having to remember to tell the writer.
import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import pino from 'pino';
import { bufferPolicySchema, bufferSettingsSchema } from '../../src/buffer/config.ts';
import { BUFFER_CHECKPOINT_PAGES, bufferPath, openBuffer } from '../../src/buffer/open.ts';
import { BufferStore, type StoredMessage } from '../../src/buffer/store.ts';
import { BufferWriter } from '../../src/buffer/writer.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { trackedDeliveries } from '../conformance/deliveries.ts';
import { eventually } from '../harness/eventually.ts';
import { tempDirs } from '../harness/temp.ts';

const logger = pino({ level: 'silent' });
const tempDir = tempDirs('ferry-upkeep-');

function setup(policy: Record<string, unknown>) {
  const counters = new CounterRegistry();
  const { store } = openBuffer(tempDir(), logger);
  const writer = new BufferWriter(store, bufferSettingsSchema().parse({}), logger, counters);
  store.registerBridge('b', ['out']);
  writer.setPolicy('b', bufferPolicySchema().parse(policy));
  return { store, writer, counters, cleanup: () => (writer.close(), store.close()) };
}

test('a bridge full under refuse takes its held messages as soon as a cursor moves, with nobody telling the writer', async () => {
  const { store, writer, cleanup } = setup({ maxMessages: 2, overflow: 'refuse' });
  try {
    const first = trackedDeliveries(2);
    for (const d of first.deliveries) writer.enqueue('b', d);
    await first.settled();
    const third = trackedDeliveries(1);
    writer.enqueue('b', third.deliveries[0] as (typeof third.deliveries)[number]);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(writer.state, 'refusing');
    assert.equal(writer.held, 1);
    // Only the store is told: the sink confirmed both messages.
    store.commit('b', 'out', store.tail('b'));
    // Stored within the same turn of the event loop, not at the writer's once-a-second retry;
    // acked once its commit is synced to disk.
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(writer.state, 'ok');
    assert.equal(store.usage('b').messages, 1);
    await eventually(() => assert.equal(third.acked.length, 1));
  } finally {
    cleanup();
  }
});

test("a bridge's maxAgeMs expires its old messages once its policy is set; counted", async () => {
  const { store, counters, cleanup } = setup({ maxAgeMs: 200 });
  try {
    const old = trackedDeliveries(3);
    store.append(old.deliveries.map((d) => ({ bridge: 'b', envelope: { ...d.envelope, timestamp: Date.now() - 10_000 } })));
    assert.equal(store.usage('b').messages, 3);
    // The expiry runs every maxAgeMs / 10 (at least 100 ms): waiting for it is the point here.
    for (const end = Date.now() + 5000; store.usage('b').messages > 0 && Date.now() < end; ) await new Promise((r) => setTimeout(r, 20));
    assert.equal(store.usage('b').messages, 0);
    assert.equal(counters.get('buffer.expired{bridge=b}'), 3);
  } finally {
    cleanup();
  }
});

test('removing a policy stops its expiry', async () => {
  const { store, writer, cleanup } = setup({ maxAgeMs: 200 });
  try {
    writer.removePolicy('b');
    const old = trackedDeliveries(2);
    store.append(old.deliveries.map((d) => ({ bridge: 'b', envelope: { ...d.envelope, timestamp: Date.now() - 10_000 } })));
    // A positive marker instead of a sleep: a second bridge's expiry runs on the same cadence.
    store.registerBridge('c', ['out']);
    writer.setPolicy('c', bufferPolicySchema().parse({ maxAgeMs: 200 }));
    const marker = trackedDeliveries(1);
    store.append(marker.deliveries.map((d) => ({ bridge: 'c', envelope: { ...d.envelope, timestamp: Date.now() - 10_000 } })));
    for (const end = Date.now() + 5000; store.usage('c').messages > 0 && Date.now() < end; ) await new Promise((r) => setTimeout(r, 20));
    assert.equal(store.usage('c').messages, 0);
    assert.equal(store.usage('b').messages, 2);
  } finally {
    cleanup();
  }
});

test('after a backlog drained, the buffer file gives its free space back to the file system (issue 16)', () => {
  const dir = tempDir();
  const { store } = openBuffer(dir, logger);
  try {
    store.registerBridge('b', ['out']);
    const payload = Buffer.alloc(1024, 7);
    for (let batch = 0; batch < 20; batch++) {
      store.append(Array.from({ length: 1000 }, (_, i) => ({ bridge: 'b', envelope: { ...trackedDeliveries(1).deliveries[0]!.envelope, id: `${batch}-${i}`, payload } })));
    }
    store.commit('b', 'out', store.tail('b'));
    const size = () => ['', '-wal'].reduce((sum, suffix) => sum + (existsSync(bufferPath(dir) + suffix) ? statSync(bufferPath(dir) + suffix).size : 0), 0);
    const before = size();
    assert.ok(before > 20 * 1024 * 1024, `${before} bytes before`);
    let freed = 0;
    for (let step = 0; step < 10; step++) freed += store.reclaimSpace();
    assert.ok(freed > 18 * 1024 * 1024, `freed ${freed}`);
    assert.ok(size() < 2 * 1024 * 1024, `${size()} bytes after`);
  } finally {
    store.close();
  }
});

test("the buffer checkpoints its WAL every 4,000 pages, not at SQLite's default 1,000 (issue 11)", () => {
  const dir = tempDir();
  const { store } = openBuffer(dir, logger);
  const file = () => statSync(bufferPath(dir)).size;
  // A message of 4,000 bytes takes about a page of its own: about `messages` pages of WAL.
  const envelope = { ...trackedDeliveries(1).deliveries[0]!.envelope, payload: Buffer.alloc(4000, 7) };
  let appended = 0;
  const appendPages = (messages: number) => {
    for (const end = appended + messages; appended < end; appended += 100) {
      store.append(Array.from({ length: 100 }, (_, i) => ({ bridge: 'b', envelope: { ...envelope, id: `m${appended + i}` } })));
    }
  };
  try {
    store.registerBridge('b', ['out']);
    const empty = file();
    appendPages(2000);
    // A WAL frame is a 24-byte header and a 4,096-byte page.
    const walPages = Math.floor(statSync(`${bufferPath(dir)}-wal`).size / (24 + 4096));
    assert.ok(walPages > 1500, `${walPages} pages in the WAL`);
    assert.equal(file(), empty, 'no checkpoint copied pages into the database yet');
    appendPages(2500);
    assert.ok(file() > (BUFFER_CHECKPOINT_PAGES - 500) * 4096, `${file()} bytes in the database after ${BUFFER_CHECKPOINT_PAGES} pages`);
  } finally {
    store.close();
  }
});

test('a snapshot reads one state of the buffer while another connection commits between its queries (issue 16)', () => {
  const dir = tempDir();
  const { store } = openBuffer(dir, logger);
  const other = openBuffer(dir, logger).store;
  try {
    store.registerBridge('b', ['out']);
    const seen = store.snapshot(() => {
      const first = store.stats('b').messages;
      other.append(trackedDeliveries(3).deliveries.map((d) => ({ bridge: 'b', envelope: d.envelope })));
      return [first, store.stats('b').messages];
    });
    assert.deepEqual(seen, [0, 0]);
    assert.equal(store.stats('b').messages, 3);
  } finally {
    other.close();
    store.close();
  }
});

test("stats: each sink's backlog and the totals, counted from either side of its cursor and kept or counted, equal a count of every row", () => {
  const dir = tempDir();
  const { store } = openBuffer(dir, logger);
  try {
    store.registerBridge('b', ['low', 'middle', 'high', 'live']);
    store.registerBridge('other', ['out']);
    // Two bridges interleaved, so the seqs of one are not consecutive.
    for (let i = 0; i < 10; i++) {
      store.append(trackedDeliveries(10).deliveries.map((d) => ({ bridge: 'b', envelope: d.envelope })));
      store.append(trackedDeliveries(3).deliveries.map((d) => ({ bridge: 'other', envelope: d.envelope })));
    }
    const seqs = store.read('b', 0, 1000).map((m) => m.seq);
    const at = (i: number) => seqs[i] as number;
    store.commit('b', 'low', at(4));
    store.commit('b', 'middle', at(49));
    store.commit('b', 'high', at(97));
    // Live-first replay: a backlog up to the 60th message, and live messages confirmed after it.
    store.commit('b', 'live', at(9));
    store.startLive('b', 'live', at(59));
    store.commitLive('b', 'live', at(79));
    // Dead letters of two sinks, and of one no longer configured: the total counts it too.
    const next = (after: number) => store.read('b', after, 1)[0] as StoredMessage;
    store.deadLetter('middle', next(at(49)), 'refused', 1);
    store.deadLetter('high', next(at(97)), 'refused', 1);
    store.deadLetter('gone', next(at(0)), 'refused', 1);
    const truth = (sink: string) => {
      const { seq, liveMark, liveSeq } = store.cursorState('b', sink);
      const rows = store.read('b', seq, 1000).filter((m) => !(m.seq > (liveMark ?? 0) && m.seq <= (liveSeq ?? 0)));
      return {
        pending: rows.length,
        pendingBytes: rows.reduce((n, m) => n + m.envelope.payload.byteLength, 0),
        oldestPendingAt: rows[0]?.envelope.timestamp ?? null,
        deadLetters: [...store.iterateDeadLetters('b')].filter((l) => l.sink === sink).length,
      };
    };
    const expected = ['high', 'live', 'low', 'middle'].map((sink) => ({ sink, ...truth(sink) }));
    const rows = store.read('b', 0, 1000);
    for (const kept of [false, true]) {
      const stats = store.stats('b', { kept });
      assert.deepEqual(
        stats.sinks.map(({ sink, pending, pendingBytes, oldestPendingAt, deadLetters }) => ({ sink, pending, pendingBytes, oldestPendingAt, deadLetters })),
        expected,
        `kept: ${kept}`,
      );
      assert.deepEqual(
        [stats.messages, stats.bytes, stats.oldestAt, stats.deadLetters],
        [rows.length, rows.reduce((n, m) => n + m.envelope.payload.byteLength, 0), rows[0]?.envelope.timestamp, 3],
      );
    }
  } finally {
    store.close();
  }
});

test('usage is counted from disk again after another connection changed the buffer, and only then', () => {
  const dir = tempDir();
  const { store } = openBuffer(dir, logger);
  const other = new Database(bufferPath(dir));
  try {
    store.registerBridge('b', ['out']);
    store.append(trackedDeliveries(5).deliveries.map((d) => ({ bridge: 'b', envelope: d.envelope })));
    assert.equal(store.usage('b').messages, 5);
    // A change on the store's own connection that bypasses its counts: no other connection
    // committed, so a recount keeps the counts (this is what shows it did not count again).
    (store as unknown as { packs: { delete(bridge: string, lo: number, hi: number): void } }).packs.delete('b', Number.NEGATIVE_INFINITY, store.read('b', 0, 1)[0]?.seq as number);
    store.recount();
    assert.equal(store.usage('b').messages, 5);
    // Another connection (as `ferry buffer purge` from another process): counted again.
    new BufferStore(other).purgeSome('b', Number.MAX_SAFE_INTEGER, 1);
    store.recount();
    assert.equal(store.usage('b').messages, 3);
  } finally {
    other.close();
    store.close();
  }
});

test('an expiry of a large backlog deletes it in steps of 10,000, and says so once', async () => {
  const counters = new CounterRegistry();
  const lines: string[] = [];
  const capturing = pino({ level: 'warn' }, { write: (line: string) => lines.push(line) });
  const { store } = openBuffer(tempDir(), capturing);
  const writer = new BufferWriter(store, bufferSettingsSchema().parse({}), capturing, counters);
  try {
    store.registerBridge('b', ['out']);
    const old = Date.now() - 10_000;
    for (let i = 0; i < 5; i++) store.append(trackedDeliveries(5_000).deliveries.map((d) => ({ bridge: 'b', envelope: { ...d.envelope, timestamp: old } })));
    store.append(trackedDeliveries(2).deliveries.map((d) => ({ bridge: 'b', envelope: d.envelope })));
    // One step removes at most its limit, the oldest first.
    assert.equal(store.expire('b', old + 1, 10_000).messages, 10_000);
    assert.equal(store.usage('b').messages, 15_002);
    writer.setPolicy('b', bufferPolicySchema().parse({ maxAgeMs: 1_000 }));
    // The expiry runs every maxAgeMs / 10: waiting for it is the point here.
    for (const end = Date.now() + 5000; store.usage('b').messages > 2 && Date.now() < end; ) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(store.usage('b').messages, 2);
    assert.equal(counters.get('buffer.expired{bridge=b}'), 15_000);
    const said = lines.map((l) => JSON.parse(l) as { msg: string; expired?: number }).filter((l) => l.msg.startsWith('removed messages older than maxAgeMs'));
    assert.deepEqual(
      said.map((l) => l.expired),
      [15_000],
    );
  } finally {
    writer.close();
    store.close();
  }
});

test('an expiry the disk refuses is counted at every turn, warned of once, and expires once the disk takes writes again', async () => {
  const counters = new CounterRegistry();
  const lines: { level: number; msg: string; failedForMs?: number }[] = [];
  const capturing = pino({ level: 'info' }, { write: (line: string) => lines.push(JSON.parse(line)) });
  const { store } = openBuffer(tempDir(), capturing);
  const writer = new BufferWriter(store, bufferSettingsSchema().parse({}), capturing, counters);
  try {
    store.registerBridge('b', ['out']);
    store.append(trackedDeliveries(3).deliveries.map((d) => ({ bridge: 'b', envelope: { ...d.envelope, timestamp: Date.now() - 10_000 } })));
    // SQLite refuses every write as a full disk would (filling the disk needs root).
    store.pragma('query_only = 1');
    writer.setPolicy('b', bufferPolicySchema().parse({ maxAgeMs: 200 }));
    // The expiry runs every 100 ms here: three failed turns.
    await eventually(() => assert.ok((counters.get('buffer.errors{reason=upkeep_failed}') ?? 0) >= 3));
    assert.equal(store.usage('b').messages, 3);
    assert.deepEqual(
      lines.filter((l) => l.msg.startsWith('could not expire')).map((l) => l.level),
      [40],
      'one warning for the whole run of failures',
    );
    store.pragma('query_only = 0');
    await eventually(() => assert.equal(store.usage('b').messages, 0));
    assert.equal(counters.get('buffer.expired{bridge=b}'), 3);
    const back = lines.filter((l) => l.msg === 'expiring old messages works again');
    assert.equal(back.length, 1);
    assert.ok((back[0]?.failedForMs ?? 0) >= 200);
  } finally {
    writer.close();
    store.close();
  }
});
