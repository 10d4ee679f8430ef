import { existsSync, renameSync } from 'node:fs';
import type Database from 'better-sqlite3';
import { type SqliteOptions, openSqlite } from './connection.ts';

export interface CheckedOpen<T> {
  readonly value: T;
  /** Where a corrupt database was moved, when it was, and what showed it corrupt. */
  readonly movedAside?: { readonly path: string; readonly error: unknown };
}

/**
 * Opens a database and builds `T` on it, checking its integrity first. A corrupt database is
 * moved aside (kept for inspection, with its WAL) and a fresh one is started; the caller reports
 * it loudly. A locked or unreadable file is an error, not corruption, and is thrown.
 */
export function openChecked<T>(path: string, options: SqliteOptions, build: (db: Database.Database) => T): CheckedOpen<T> {
  try {
    return { value: openAndCheck(path, options, build) };
  } catch (error) {
    if (!existsSync(path) || !isCorruption(error)) throw error;
    const aside = `${path}.corrupt-${new Date().toISOString().replace(/[:.]/g, '-')}`;
    for (const suffix of ['', '-wal', '-shm']) {
      if (existsSync(path + suffix)) renameSync(path + suffix, aside + suffix);
    }
    return { value: openAndCheck(path, options, build), movedAside: { path: aside, error } };
  }
}

function openAndCheck<T>(path: string, options: SqliteOptions, build: (db: Database.Database) => T): T {
  const db = openSqlite(path, options);
  try {
    const result = (db.pragma('quick_check') as { quick_check: string }[]).map((r) => r.quick_check).join('; ');
    if (result !== 'ok') throw Object.assign(new Error(`quick_check: ${result}`), { code: 'SQLITE_CORRUPT' });
    return build(db);
  } catch (error) {
    db.close();
    throw error;
  }
}

function isCorruption(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && (code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_NOTADB');
}
