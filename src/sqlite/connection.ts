import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';

export type Synchronous = 'full' | 'normal';

export interface SqliteOptions {
  /** 'full' survives power loss (one fsync per commit); 'normal' survives process crashes only. */
  readonly synchronous?: Synchronous;
  readonly readonly?: boolean;
  /** How long a statement waits for another connection's write lock. */
  readonly busyTimeoutMs?: number;
  /** Page cache per connection. */
  readonly cacheKiB?: number;
  /**
   * Memory-mapped I/O. Off by default: an I/O error on a mapped page (a failing SD card)
   * kills the process with SIGBUS instead of returning an error.
   */
  readonly mmapBytes?: number;
  /** WAL pages after which a commit checkpoints the WAL into the database. */
  readonly walAutocheckpointPages?: number;
  /** Size the WAL file is truncated back to after a checkpoint, so it cannot keep a burst's size. */
  readonly walLimitBytes?: number;
}

/**
 * Opens a SQLite database the way every Ferry store uses it: WAL (readers never block the
 * writer), a busy timeout, a bounded page cache and WAL file, and the caller's fsync policy.
 */
export function openSqlite(path: string, options: SqliteOptions = {}): Database.Database {
  const readonly = options.readonly ?? false;
  if (!readonly) mkdirSync(dirname(path), { recursive: true });
  const db = new Database(path, { readonly, fileMustExist: readonly });
  try {
    db.pragma(`busy_timeout = ${options.busyTimeoutMs ?? 5000}`);
    db.pragma(`cache_size = -${options.cacheKiB ?? 8192}`);
    db.pragma(`mmap_size = ${options.mmapBytes ?? 0}`);
    if (!readonly) {
      db.pragma('journal_mode = WAL');
      db.pragma(`synchronous = ${(options.synchronous ?? 'full').toUpperCase()}`);
      db.pragma(`wal_autocheckpoint = ${options.walAutocheckpointPages ?? 1000}`);
      db.pragma(`journal_size_limit = ${options.walLimitBytes ?? 64 * 1024 * 1024}`);
    }
  } catch (error) {
    // A file that is no database fails at its first pragma: do not leak the connection.
    db.close();
    throw error;
  }
  return db;
}

/**
 * Carries the highest seq that table `from` (AUTOINCREMENT) gave out over to table `to`, when
 * an earlier version's table is converted into `to`: a seq given out once, even one whose row
 * is gone, is never given out again.
 */
export function carrySequence(db: Database.Database, from: string, to: string): void {
  const sequence = db.prepare<[string], number>('SELECT seq FROM sqlite_sequence WHERE name = ?').pluck();
  const given = sequence.get(from) ?? 0;
  const carried = sequence.get(to);
  if (carried === undefined) db.prepare('INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)').run(to, given);
  else if (carried < given) db.prepare('UPDATE sqlite_sequence SET seq = ? WHERE name = ?').run(given, to);
}
