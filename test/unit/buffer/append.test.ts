// The log's rows as appended in bulk (src/buffer/append.ts): runs of one bridge's messages
// without key or headers go through a statement with those in its text, the rest through the
// general ones. Whatever the mix, every row must hold exactly what its message had, under the
// seq append returned. A real buffer database in a temporary directory.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import pino from 'pino';
import { bufferPath, openBuffer } from '../../../src/buffer/open.ts';
import type { MessageRow as Row } from '../../../src/buffer/rows.ts';
import type { AppendEntry } from '../../../src/buffer/store.ts';
import { createEnvelope } from '../../../src/core/envelope.ts';
import { INSERT_ROWS } from '../../../src/sqlite/connection.ts';
import { tempDirs } from '../../harness/temp.ts';

const tempDir = tempDirs('ferry-append-');

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

test('every appended row holds its message under the seq append returned, whichever statement wrote it', () => {
  const dir = tempDir();
  const { store } = openBuffer(dir, pino({ level: 'silent' }));
  const odd = "it's-odd name"; // not a bridge name a gateway allows: never put into a statement's text
  for (const bridge of ['a', 'b', odd]) store.registerBridge(bridge, ['out']);
  const a = messages('a', INSERT_ROWS * 3);
  const b = messages('b', INSERT_ROWS * 2);
  const entries: AppendEntry[] = [
    ...a.slice(0, INSERT_ROWS), // a plain run of one bridge
    ...a.slice(INSERT_ROWS, INSERT_ROWS * 2).flatMap((entry, i) => [entry, b[i] as AppendEntry]), // two bridges interleaved
    ...messages('a', INSERT_ROWS, (i) => (i === 7 ? { key: 'k-7' } : {})), // one message with a key
    ...messages('b', INSERT_ROWS, (i) => (i === 30 ? { headers: { trace: 't-30' } } : {})), // one with headers
    ...messages(odd, INSERT_ROWS + 3),
    ...a.slice(INSERT_ROWS * 2, INSERT_ROWS * 2 + 10).map((entry, i) => (i === 4 ? deadLetter(entry) : entry)),
    ...messages('b', INSERT_ROWS * 2 + 5, (i) => (i % 11 === 0 ? { key: `k-${i}`, headers: { h: String(i) } } : {})),
  ];
  const seqs = store.append(entries);
  store.close();

  const db = new Database(bufferPath(dir), { readonly: true });
  const rows = new Map((db.prepare('SELECT * FROM messages').all() as Row[]).map((row) => [row.seq, row]));
  const dead = db.prepare('SELECT bridge, seq, id, key, headers, payload FROM dead_letters').all() as Row[];
  db.close();

  assert.equal(seqs.length, entries.length);
  assert.equal(rows.size, entries.length - 1);
  for (const [i, { bridge, envelope: e, deadLetter: refused }] of entries.entries()) {
    if (refused !== undefined) {
      assert.equal(seqs[i], 0);
      assert.deepEqual(dead, [{ bridge, seq: 0, id: e.id, key: null, headers: '{}', payload: Buffer.from(e.payload) }]);
      continue;
    }
    const row = rows.get(seqs[i] as number);
    assert.ok(row !== undefined, `entry ${i}: no row under seq ${seqs[i]}`);
    assert.deepEqual(
      { ...row, seq: 0 },
      {
        seq: 0,
        bridge,
        id: e.id,
        topic: e.topic,
        key: e.key ?? null,
        headers: JSON.stringify(e.headers),
        origin: JSON.stringify(e.origin),
        payload: Buffer.from(e.payload),
        created_at: e.timestamp,
      },
      `entry ${i}`,
    );
  }
  // In the order given: seqs rise with the entries (dead letters aside).
  const logged = seqs.filter((seq) => seq !== 0);
  assert.deepEqual(
    logged,
    [...logged].sort((x, y) => x - y),
  );
});
