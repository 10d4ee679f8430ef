// The log's messages as appended in bulk (src/buffer/append.ts, src/buffer/packs.ts): each
// bridge's messages of a commit go into packs, blobs encoded in JavaScript. Whatever the mix
// (bridges interleaved, keys, headers, text beyond ASCII, a message larger than a pack, more
// messages than a pack holds, dead letters), every message must read back exactly as it was,
// under the seq append returned. A real buffer database in a temporary directory.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import pino from 'pino';
import { bufferPath, openBuffer } from '../../../src/buffer/open.ts';
import { PACK_BYTES, PACK_MESSAGES } from '../../../src/buffer/packs.ts';
import type { MessageRow as Row } from '../../../src/buffer/rows.ts';
import { type AppendEntry, BufferStore } from '../../../src/buffer/store.ts';
import { createEnvelope } from '../../../src/core/envelope.ts';
import { openSqlite } from '../../../src/sqlite/connection.ts';
import { tempDirs } from '../../harness/temp.ts';

const tempDir = tempDirs('ferry-append-');
const RUN = 32;

/** `count` messages to `bridge`; `shape(i)` adds a key or headers to the i-th. */
function messages(bridge: string, count: number, shape: (i: number) => { key?: string; headers?: Record<string, string> } = () => ({})): AppendEntry[] {
  return Array.from({ length: count }, (_, i) => ({
    bridge,
    envelope: createEnvelope({
      topic: `devices/d${i % 3}/telemetry/${bridge}`,
      payload: Buffer.from(`${bridge}-${i}`),
      origin: { source: 'mqtt', clientId: `d${i % 3}`, qos: 1, retain: false },
      timestamp: 1_700_000_000_000 + i,
      ...shape(i),
    }),
  }));
}

const deadLetter = (entry: AppendEntry): AppendEntry => ({ ...entry, deadLetter: { sink: 'transform', reason: 'refused at ingress' } });

test('every appended message reads back as it was under the seq append returned, whatever the mix', () => {
  const dir = tempDir();
  const { store } = openBuffer(dir, pino({ level: 'silent' }));
  const odd = "it's-odd name ✓";
  for (const bridge of ['a', 'b', odd]) store.registerBridge(bridge, ['out']);
  const a = messages('a', RUN * 3);
  const b = messages('b', RUN * 2);
  const large = createEnvelope({ topic: 'big/ü', payload: Buffer.alloc(5 * PACK_BYTES, 3), origin: { source: 'mqtt', clientId: 'big' }, key: '' });
  const entries: AppendEntry[] = [
    ...a.slice(0, RUN), // a run of one bridge
    ...a.slice(RUN, RUN * 2).flatMap((entry, i) => [entry, b[i] as AppendEntry]), // two bridges interleaved
    ...messages('a', RUN, (i) => (i === 7 ? { key: 'k-7' } : {})), // one message with a key
    ...messages('b', RUN, (i) => (i === 30 ? { headers: { trace: 't-30', ключ: 'значение' } } : {})), // one with headers
    ...messages(odd, RUN + 3),
    { bridge: 'a', envelope: large }, // more bytes than a pack takes: it closes its pack, and the scratch it grew is let go
    ...a.slice(RUN * 2, RUN * 2 + 10).map((entry, i) => (i === 4 ? deadLetter(entry) : entry)),
    ...messages('b', PACK_MESSAGES + 5, (i) => (i % 11 === 0 ? { key: `k-${i}`, headers: { h: String(i) } } : {})), // more than a pack holds
  ];
  const seqs = store.append(entries);
  store.close();

  const reader = new BufferStore(openSqlite(bufferPath(dir), { readonly: true }));
  const stored = new Map([...reader.iterateMessages()].map((m) => [m.seq, m]));
  reader.close();
  const db = new Database(bufferPath(dir), { readonly: true });
  const dead = db.prepare('SELECT bridge, seq, id, key, headers, payload FROM dead_letters').all() as Row[];
  const packs = db.prepare('SELECT bridge, first, last FROM packs ORDER BY last').all() as { bridge: string; first: number; last: number }[];
  db.close();

  assert.equal(seqs.length, entries.length);
  assert.equal(stored.size, entries.length - 1);
  for (const [i, { bridge, envelope: e, deadLetter: refused }] of entries.entries()) {
    if (refused !== undefined) {
      assert.equal(seqs[i], 0);
      assert.deepEqual(dead, [{ bridge, seq: 0, id: e.id, key: null, headers: '{}', payload: Buffer.from(e.payload) }]);
      continue;
    }
    const message = stored.get(seqs[i] as number);
    assert.ok(message !== undefined, `entry ${i}: nothing under seq ${seqs[i]}`);
    assert.equal(message.bridge, bridge, `entry ${i}`);
    assert.deepEqual({ ...message.envelope, payload: Buffer.from(message.envelope.payload) }, { ...e, payload: Buffer.from(e.payload) }, `entry ${i}`);
  }
  // Within a bridge, in the order given: seqs rise with its entries.
  for (const bridge of ['a', 'b', odd]) {
    const mine = seqs.filter((seq, i) => seq !== 0 && entries[i]?.bridge === bridge);
    assert.deepEqual(
      mine,
      [...mine].sort((x, y) => x - y),
      bridge,
    );
  }
  // A pack a bridge, split where one is full (the large message closes its own).
  assert.deepEqual(
    packs.map((p) => p.bridge),
    ['a', 'a', 'b', 'b', odd],
  );
  for (const p of packs) assert.ok(p.last - p.first + 1 <= PACK_MESSAGES);
});
