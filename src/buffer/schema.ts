import type Database from 'better-sqlite3';

/** The buffer's tables. `seq` orders everything: per bridge, a message's place in the log. */
export const BUFFER_SCHEMA = `
CREATE TABLE IF NOT EXISTS messages (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  bridge TEXT NOT NULL,
  id TEXT NOT NULL,
  topic TEXT NOT NULL,
  key TEXT,
  headers TEXT NOT NULL,
  origin TEXT NOT NULL,
  payload BLOB NOT NULL,
  created_at INTEGER NOT NULL
);
-- Each payload's length rides in the index, so a sink's backlog (count and bytes of the rows
-- above its cursor) is counted from the index alone, not by reading every row.
CREATE INDEX IF NOT EXISTS messages_bridge_seq_bytes ON messages (bridge, seq, length(payload));

-- seq: everything up to it is confirmed. Under live-first replay, live_mark splits the log:
-- (seq, live_mark] is the backlog, and everything in (live_mark, live_seq] is confirmed too.
CREATE TABLE IF NOT EXISTS cursors (
  bridge TEXT NOT NULL,
  sink TEXT NOT NULL,
  seq INTEGER NOT NULL,
  live_mark INTEGER,
  live_seq INTEGER,
  PRIMARY KEY (bridge, sink)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS dead_letters (
  dl_seq INTEGER PRIMARY KEY AUTOINCREMENT,
  bridge TEXT NOT NULL,
  sink TEXT NOT NULL,
  reason TEXT NOT NULL,
  attempts INTEGER NOT NULL,
  dead_at INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  id TEXT NOT NULL,
  topic TEXT NOT NULL,
  key TEXT,
  headers TEXT NOT NULL,
  origin TEXT NOT NULL,
  payload BLOB NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_bridge ON dead_letters (bridge, dl_seq);
-- Counts per sink (in /api/status, /metrics) read this index alone, not every dead letter.
CREATE INDEX IF NOT EXISTS dead_letters_bridge_sink ON dead_letters (bridge, sink);
`;

/** Brings a buffer made by an earlier version up to the current schema. */
export function migrate(db: Database.Database): void {
  const columns = (db.pragma('table_info(cursors)') as { name: string }[]).map((c) => c.name);
  if (!columns.includes('live_mark')) {
    db.exec('ALTER TABLE cursors ADD COLUMN live_mark INTEGER; ALTER TABLE cursors ADD COLUMN live_seq INTEGER;');
  }
  // messages_bridge_seq_bytes (the schema made it just now) serves every query the first did; the
  // second went when expiry and the oldest message's age went by seq (one B-tree less per append).
  db.exec('DROP INDEX IF EXISTS messages_bridge_seq; DROP INDEX IF EXISTS messages_bridge_created');
}

/** True when the buffer still has the index of earlier versions: opening it builds the new one, once (seconds for millions of messages). */
export function needsIndexUpgrade(db: Database.Database): boolean {
  return !db.readonly && db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'messages_bridge_seq'").get() !== undefined;
}
