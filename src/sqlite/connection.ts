import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';

export type Synchronous = 'full' | 'normal';

export interface SqliteOptions {
  /** 'full' survives power loss (one fsync per commit); 'normal' survives process crashes only. */
  readonly synchronous?: Synchronous;
  readonly readonly?: boolean;
  readonly busyTimeoutMs?: number;
}

/** Opens a SQLite database the way every Ferry store uses it: WAL, a busy timeout, fsync policy. */
export function openSqlite(path: string, options: SqliteOptions = {}): Database.Database {
  if (options.readonly !== true) mkdirSync(dirname(path), { recursive: true });
  const db = new Database(path, { readonly: options.readonly ?? false, fileMustExist: options.readonly ?? false });
  db.pragma(`busy_timeout = ${options.busyTimeoutMs ?? 5000}`);
  if (options.readonly !== true) {
    db.pragma('journal_mode = WAL');
    db.pragma(`synchronous = ${(options.synchronous ?? 'full').toUpperCase()}`);
  }
  return db;
}
