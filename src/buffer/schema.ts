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
CREATE INDEX IF NOT EXISTS messages_bridge_created ON messages (bridge, created_at);

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
