// Issue 11 (CPU): the buffer reads the messages its own connection appended last from memory
// (src/buffer/recent.ts). Whatever changed the log in between, a read must answer what the
// database holds: each case compares it with the same read through a second connection, which
// appends nothing and so always reads the rows.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import { bufferPath, openBuffer } from '../../src/buffer/open.ts';
import { BufferStore, type StoredMessage } from '../../src/buffer/store.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import { openSqlite } from '../../src/sqlite/connection.ts';
import { tempDirs } from '../harness/temp.ts';

const logger = pino({ level: 'silent' });
const tempDir = tempDirs('ferry-buffer-recent-');

let n = 0;
const envelope = (topic = 'devices/d1/telemetry/t') =>
  createEnvelope({ topic, payload: new Uint8Array(Buffer.from(`reading ${++n}`)), origin: { source: 'test', clientId: 'd1', qos: 1 }, headers: { n: String(n) } });

/** What a read gives, in a form two connections' answers can be compared in. */
const view = (messages: readonly StoredMessage[]) =>
  messages.map(({ seq, bridge, envelope: e }) => ({
    seq,
    bridge,
    id: e.id,
    topic: e.topic,
    payload: Buffer.from(e.payload).toString(),
    headers: { ...e.headers },
    key: e.key,
    at: e.timestamp,
  }));

function setup() {
  const dir = tempDir();
  const { store } = openBuffer(dir, logger);
  store.registerBridge('b', ['one', 'two']);
  store.registerBridge('c', ['one']);
  const disk = new BufferStore(openSqlite(bufferPath(dir), { readonly: true }));
  /** Reads through both connections and checks they agree; returns this connection's answer. */
  const read = (bridge: string, afterSeq: number, limit = 100) => {
    const mine = store.read(bridge, afterSeq, limit);
    assert.deepEqual(view(mine), view(disk.read(bridge, afterSeq, limit)), `read(${bridge}, ${afterSeq}, ${limit})`);
    return mine;
  };
  const append = (bridge: string, count: number) => store.append(Array.from({ length: count }, () => ({ bridge, envelope: envelope() })));
  return { dir, store, read, append, close: () => (disk.close(), store.close()) };
}

test('a message whose payload is a Buffer is read back from memory as it was appended, not copied; another payload as a Buffer over its bytes', () => {
  const { store, read, close } = setup();
  try {
    const device = createEnvelope({ topic: 'devices/d1/telemetry/t', payload: Buffer.from('from a device'), origin: { source: 'mqtt', clientId: 'd1', qos: 1 } });
    const other = envelope();
    store.append([
      { bridge: 'b', envelope: device },
      { bridge: 'b', envelope: other },
    ]);
    const [first, second] = read('b', 0);
    assert.equal(first?.envelope, device);
    assert.notEqual(second?.envelope, other);
    assert.ok(Buffer.isBuffer(second?.envelope.payload));
    assert.equal((second?.envelope.payload as Buffer).buffer, other.payload.buffer, 'a view over the same bytes');
  } finally {
    close();
  }
});

test('reads of the messages just appended answer what the database holds, from any position and in any window', () => {
  const { store, read, append, close } = setup();
  try {
    read('b', 0);
    const seqs = append('b', 10);
    append('c', 3);
    const all = read('b', 0);
    assert.equal(all.length, 10);
    for (const message of all) assert.ok(Buffer.isBuffer(message.envelope.payload), 'a Buffer, as a row gives');
    read('b', seqs[4] as number, 3);
    read('b', (seqs[9] as number) + 100);
    read('c', 0, 2);
    // A release of what both sinks are past, then more appends.
    store.commit('b', 'one', seqs[5] as number);
    store.commit('b', 'two', seqs[6] as number);
    append('b', 4);
    read('b', 0);
    read('b', seqs[6] as number);
  } finally {
    close();
  }
});

test('a sink far behind while its bridge floods, then catching up: every read answers what the database holds', () => {
  const { store, read, append, close } = setup();
  try {
    // More than the memory keeps, none of it read: the bridge stops being kept.
    for (let i = 0; i < 50; i++) append('c', 100);
    let through = 0;
    // The sink reads in batches while the flood goes on, and catches up.
    for (let batch = 0; through < 5000 + 10 * 40; batch++) {
      const found = read('c', through, 250);
      if (batch < 10) append('c', 40);
      through = found.at(-1)?.seq ?? through;
    }
    // Caught up: kept again, and the next messages are read from memory (views over the very
    // bytes appended, where a row read back has bytes of its own).
    const next = [envelope(), envelope(), envelope()];
    store.append(next.map((e) => ({ bridge: 'c', envelope: e })));
    const found = read('c', through);
    assert.equal(found.length, 3);
    found.forEach((m, i) => assert.equal(m.envelope.payload.buffer, next[i]?.payload.buffer, 'from memory'));
  } finally {
    close();
  }
});

test('after a deletion other than the release (drop-oldest, expiry, a settle ahead of the cursor, a purge) reads answer what is left', () => {
  const { store, read, append, close } = setup();
  try {
    append('b', 6);
    read('b', 0);
    store.dropOldest('b', 2);
    read('b', 0);
    append('b', 2);
    store.expire('b', Date.now() + 1_000, 1);
    read('b', 0);
    append('c', 4);
    const ahead = read('c', 0).slice(1, 3);
    store.settleAhead('c', 'one', ahead, []);
    read('c', 0);
    append('b', 3);
    store.purgeSome('b', Number.MAX_SAFE_INTEGER, 2);
    read('b', 0);
    // Dropped in the append's own transaction, as overflow drop-oldest does: all the older
    // rows and two of the new ones.
    const tail = store.tail('b');
    const older = store.usage('b').messages;
    store.append(
      Array.from({ length: 4 }, () => ({ bridge: 'b', envelope: envelope() })),
      () => store.dropOldest('b', older + 2),
    );
    read('b', 0);
    read('b', tail);
  } finally {
    close();
  }
});

test("rows another connection added, and a redrive's rows, are read in order with this connection's own", () => {
  const { dir, store, read, append, close } = setup();
  const other = openBuffer(dir, logger).store;
  try {
    append('b', 3);
    read('b', 0);
    // Another process's append (as `ferry buffer redrive` makes), then this one's.
    other.append([{ bridge: 'b', envelope: envelope() }]);
    append('b', 2);
    assert.equal(read('b', 0).length, 6);
    // A redrive in this connection: its append runs inside the redrive's transaction.
    const [first] = read('b', 0);
    store.deadLetter('one', first as StoredMessage, 'refused', 1);
    store.deadLetter('two', first as StoredMessage, 'refused', 1);
    append('b', 1);
    assert.equal(store.redriveSome('b', Number.MAX_SAFE_INTEGER, 10), 2);
    append('b', 1);
    read('b', 0);
    read('b', (first as StoredMessage).seq);
    // An append inside a transaction that rolls back leaves nothing to read.
    const tail = store.tail('b');
    assert.throws(() =>
      store.writeTransaction(() => {
        append('b', 2);
        throw new Error('rolled back');
      }),
    );
    append('b', 1);
    read('b', 0);
    assert.equal(read('b', tail).length, 1);
  } finally {
    other.close();
    close();
  }
});
