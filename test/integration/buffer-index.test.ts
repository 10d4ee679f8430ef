// A sink's backlog (messages and bytes above its cursor, in /api/status and /metrics) is counted
// from an index that carries each payload's length, not by reading every row; a buffer made by
// an earlier version gets that index once when the gateway opens it, and a reader changes nothing.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import pino from 'pino';
import { bufferPath, openBuffer } from '../../src/buffer/open.ts';
import { BufferStore } from '../../src/buffer/store.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import { openSqlite } from '../../src/sqlite/connection.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-buffer-index-');

/** A buffer with 300 messages of bridge `b` (payloads of 1 to 300 bytes) and a sink `out` confirmed through the 100th. */
function filled(dir: string): { store: BufferStore; cursor: number } {
  const { store } = openBuffer(dir, pino({ level: 'silent' }));
  store.registerBridge('b', ['out', 'late']);
  const seqs = store.append(
    Array.from({ length: 300 }, (_, i) => ({ bridge: 'b', envelope: createEnvelope({ topic: `t/${i}`, payload: Buffer.alloc(i + 1, 'x'), origin: { source: 'test', qos: 1 } }) })),
  );
  const cursor = seqs[99] as number;
  store.commit('b', 'out', cursor);
  return { store, cursor };
}

function indexes(path: string): string[] {
  const db = new Database(path, { readonly: true });
  try {
    return (db.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages' ORDER BY name").all() as { name: string }[]).map((r) => r.name);
  } finally {
    db.close();
  }
}

/** What a buffer of an earlier version had: the index on (bridge, seq) alone, and one on (bridge, created_at) for expiry. */
function downgrade(path: string): void {
  const db = new Database(path);
  db.exec(
    'DROP INDEX messages_bridge_seq_bytes; CREATE INDEX messages_bridge_seq ON messages (bridge, seq); CREATE INDEX messages_bridge_created ON messages (bridge, created_at)',
  );
  db.close();
}

const pendingOut = (store: BufferStore) => store.stats('b').sinks.find((s) => s.sink === 'out');
// Bytes of the messages 101 to 300: payloads of 101 to 300 bytes.
const EXPECTED = { pending: 200, pendingBytes: (101 + 300) * 100 };

test("a sink's backlog is counted from the index alone (SQLite's plan reads no row)", () => {
  const dir = tempDir();
  const { store, cursor } = filled(dir);
  assert.deepEqual({ pending: pendingOut(store)?.pending, pendingBytes: pendingOut(store)?.pendingBytes }, EXPECTED);
  store.close();
  assert.deepEqual(indexes(bufferPath(dir)), ['messages_bridge_seq_bytes']);
  const db = new Database(bufferPath(dir), { readonly: true });
  const plan = db
    .prepare('EXPLAIN QUERY PLAN SELECT count(*) AS messages, coalesce(sum(length(payload)), 0) AS bytes FROM messages WHERE bridge = ? AND seq > ?')
    .all('b', cursor) as { detail: string }[];
  db.close();
  assert.match(plan.map((p) => p.detail).join('\n'), /COVERING INDEX messages_bridge_seq_bytes/);
});

test('a buffer of an earlier version gets the index once, when the gateway opens it, saying so; a reader before that changes nothing and counts the same', () => {
  const dir = tempDir();
  const made = filled(dir);
  made.store.close();
  downgrade(bufferPath(dir));

  // `ferry buffer stats` (a read-only connection) on it, for instance while the older gateway still runs.
  const reader = new BufferStore(openSqlite(bufferPath(dir), { readonly: true }));
  assert.deepEqual({ pending: pendingOut(reader)?.pending, pendingBytes: pendingOut(reader)?.pendingBytes }, EXPECTED);
  reader.close();
  assert.deepEqual(indexes(bufferPath(dir)), ['messages_bridge_created', 'messages_bridge_seq']);

  const lines: { msg: string; messages?: number }[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => lines.push(JSON.parse(line)) });
  const { store } = openBuffer(dir, logger);
  // The index on the time went too: expiry and the oldest message's age go by seq.
  assert.deepEqual(indexes(bufferPath(dir)), ['messages_bridge_seq_bytes']);
  assert.deepEqual({ pending: pendingOut(store)?.pending, pendingBytes: pendingOut(store)?.pendingBytes }, EXPECTED);
  assert.equal(store.cursor('b', 'out'), made.cursor);
  store.close();
  assert.equal(lines.find((l) => l.msg.startsWith('buffer: building the index'))?.messages, 300);

  // Opened again: nothing to build.
  lines.length = 0;
  openBuffer(dir, logger).store.close();
  assert.deepEqual(lines, []);
});
