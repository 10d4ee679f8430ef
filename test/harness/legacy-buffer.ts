// A buffer.db as a version before packs left it (a row a message), for the tests of its conversion.
import Database from 'better-sqlite3';
import { type Envelope, createEnvelope } from '../../src/core/envelope.ts';

/** The log of an earlier version: a row a message. */
const LEGACY = `
CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, bridge TEXT NOT NULL, id TEXT NOT NULL, topic TEXT NOT NULL, key TEXT,
  headers TEXT NOT NULL, origin TEXT NOT NULL, payload BLOB NOT NULL, created_at INTEGER NOT NULL);
CREATE INDEX messages_bridge_seq_bytes ON messages (bridge, seq, length(payload));
CREATE TABLE cursors (bridge TEXT NOT NULL, sink TEXT NOT NULL, seq INTEGER NOT NULL, live_mark INTEGER, live_seq INTEGER, PRIMARY KEY (bridge, sink)) WITHOUT ROWID;
CREATE TABLE dead_letters (dl_seq INTEGER PRIMARY KEY AUTOINCREMENT, bridge TEXT NOT NULL, sink TEXT NOT NULL, reason TEXT NOT NULL, attempts INTEGER NOT NULL,
  dead_at INTEGER NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL, topic TEXT NOT NULL, key TEXT, headers TEXT NOT NULL, origin TEXT NOT NULL,
  payload BLOB NOT NULL, created_at INTEGER NOT NULL);`;

/** The i-th message written: topic t/i, i + 1 bytes of payload, a time i ms after a fixed one. */
export const legacyEnvelope = (i: number, extra: { key?: string; headers?: Record<string, string> } = {}): Envelope =>
  createEnvelope({ topic: `t/${i}`, payload: Buffer.alloc(i + 1, 'x'), origin: { source: 'test', qos: 1 }, timestamp: 1_700_000_000_000 + i, ...extra });

/**
 * Writes at `path` a buffer.db as an earlier version left it: 2,500 messages appended (bridges
 * a and b interleaved for the first 1,000, then a alone; a key and headers on every 97th), the
 * last 10 and the 1,500th gone, cursors of sink `out` at 400 (a) and 0 (b). Returns what was
 * written, in seq order from 1.
 */
export function legacyBuffer(path: string): { bridge: string; e: Envelope }[] {
  const old = new Database(path);
  old.pragma('journal_mode = WAL');
  old.exec(LEGACY);
  const insert = old.prepare('INSERT INTO messages (bridge, id, topic, key, headers, origin, payload, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)');
  const written: { bridge: string; e: Envelope }[] = [];
  for (let i = 0; i < 2_500; i++) {
    const bridge = i < 1_000 ? (i % 2 === 0 ? 'a' : 'b') : 'a';
    const e = legacyEnvelope(i, i % 97 === 0 ? { key: `k${i}`, headers: { h: `${i}` } } : {});
    insert.run(bridge, e.id, e.topic, e.key ?? null, JSON.stringify(e.headers), JSON.stringify(e.origin), e.payload, e.timestamp);
    written.push({ bridge, e });
  }
  // Gone already: the last 10 (their seqs are never given out again) and one in the middle.
  old.exec('DELETE FROM messages WHERE seq > 2490 OR seq = 1500');
  old.prepare("INSERT INTO cursors (bridge, sink, seq) VALUES ('a', 'out', 400), ('b', 'out', 0)").run();
  old.close();
  return written;
}
