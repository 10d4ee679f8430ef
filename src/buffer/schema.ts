import type Database from 'better-sqlite3';
import { carrySequence } from '../sqlite/connection.ts';
import { INSERT_PACK } from './append.ts';
import { packRuns } from './packs.ts';
import { type MessageRow, toStored } from './rows.ts';

/** The buffer's tables. `seq` orders everything: per bridge, a message's place in the log. */
export const BUFFER_SCHEMA = `
-- The log: runs of one bridge's messages with consecutive seqs, [first, last], a row each
-- (packs.ts has the blobs' layout; meta comes before body, so that reading it reads none of the
-- body's pages). Keyed by the last seq: AUTOINCREMENT keeps the highest seq ever given out in
-- sqlite_sequence, so a seq is never used twice, even once the log is empty. Each pack's span
-- and payload bytes ride in the index, so a sink's backlog is counted from the index alone.
CREATE TABLE IF NOT EXISTS packs (
  last INTEGER PRIMARY KEY AUTOINCREMENT,
  bridge TEXT NOT NULL,
  first INTEGER NOT NULL,
  bytes INTEGER NOT NULL,
  meta BLOB NOT NULL,
  body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS packs_bridge_last ON packs (bridge, last, first, bytes);

-- Per bridge, the seq at and below which its messages are gone: the front of its first pack
-- that a release, purge or expiry cut off. The pack itself goes when all of it is gone, so
-- moving the front costs a row here, not a rewrite of the pack. A pack's first and bytes are
-- the pack's as written; what lies at or below the floor does not count.
CREATE TABLE IF NOT EXISTS floors (
  bridge TEXT PRIMARY KEY,
  seq INTEGER NOT NULL
) WITHOUT ROWID;

-- Messages settled ahead of their sink's cursor (a handler's later messages done while an
-- earlier one is still out; bridges of one sink only), with their payload bytes: gone from the
-- log, though not from their pack, which is not written again for them. They go from here when
-- the front of the log passes them.
CREATE TABLE IF NOT EXISTS settled (
  bridge TEXT NOT NULL,
  seq INTEGER NOT NULL,
  bytes INTEGER NOT NULL,
  PRIMARY KEY (bridge, seq)
) WITHOUT ROWID;

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

/**
 * Takes the name of the log of earlier versions, which kept a row a message in a table of this
 * name: an earlier Ferry opening this buffer fails on it ("views may not be indexed") instead
 * of starting on an empty log beside the packs it cannot see.
 */
const LEGACY_GUARD = `CREATE VIEW IF NOT EXISTS messages AS
  SELECT 'the messages of this buffer are in the table packs: open it with the Ferry that wrote it, or a newer one' AS note`;

/** Rows of the log of earlier versions moved into packs per transaction. */
const MOVE_ROWS = 20_000;

/**
 * Brings a buffer made by an earlier version up to the current schema: the rows of its log
 * become packs in transactions of `rows` rows, keeping their seqs; a restart in the middle goes
 * on where it stopped (nothing else writes packs before this is done). `progress` is told the
 * rows moved so far after each transaction.
 */
export function migrate(db: Database.Database, progress?: (moved: number) => void, rows = MOVE_ROWS): void {
  const columns = (db.pragma('table_info(cursors)') as { name: string }[]).map((c) => c.name);
  if (!columns.includes('live_mark')) {
    db.exec('ALTER TABLE cursors ADD COLUMN live_mark INTEGER; ALTER TABLE cursors ADD COLUMN live_seq INTEGER;');
  }
  if (hasLegacyLog(db)) packLegacyRows(db, rows, progress);
  db.exec(LEGACY_GUARD);
}

/** True when the buffer still has the log of earlier versions, a row a message: opening it writable moves them into packs. */
export function hasLegacyLog(db: Database.Database): boolean {
  return db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'messages'").get() !== undefined;
}

/** Rows in the log of earlier versions. */
export function legacyRows(db: Database.Database): number {
  return hasLegacyLog(db) ? (db.prepare('SELECT count(*) FROM messages').pluck().get() as number) : 0;
}

function packLegacyRows(db: Database.Database, chunk: number, progress?: (moved: number) => void): void {
  // Where the last run stopped: the rows up to the packs' highest seq are moved (the table goes
  // at the end, in one piece, rather than row by row).
  const next = db.prepare('SELECT * FROM messages WHERE seq > (SELECT coalesce(max(last), 0) FROM packs) ORDER BY seq LIMIT ?');
  const insert = db.prepare(INSERT_PACK);
  let moved = 0;
  const step = db.transaction((): number => {
    carrySequence(db, 'messages', 'packs');
    const rows = next.all(chunk) as MessageRow[];
    packRuns(
      rows,
      (row) => toStored(row).envelope,
      (pack, _run, { bridge, first, last }) => insert.run(last, bridge, first, pack.bytes, pack.meta(), pack.body()),
    );
    return rows.length;
  });
  for (let n = step(); n > 0; n = step()) {
    moved += n;
    progress?.(moved);
  }
  db.exec('DROP TABLE messages');
}
