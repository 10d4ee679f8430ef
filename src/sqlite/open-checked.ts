import { closeSync, existsSync, fstatSync, openSync, readSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { freemem } from 'node:os';
import type Database from 'better-sqlite3';
import { type SqliteOptions, openSqlite } from './connection.ts';

export interface CheckedOpen<T> {
  readonly value: T;
  /** Where a corrupt database was moved, when it was, and what showed it corrupt. */
  readonly movedAside?: { readonly path: string; readonly error: unknown };
  /** Set when the integrity check was left for later (see CheckOptions): the caller runs it with checkInBackground. */
  readonly checkDeferred?: { readonly bytes: number };
}

export interface CheckOptions {
  /**
   * Databases larger than this (bytes) that were closed cleanly are opened without the full
   * check, which reads every page (about 0.4 s per 400 MB from the page cache, 0.8 s from this
   * machine's disk after readAhead); the caller checks them in the background instead. Undefined: always in full.
   */
  readonly deferAbove?: number;
}

/** The file whose presence says a database must be checked in full at its next open. */
export function checkMarkerPath(path: string): string {
  return `${path}-check`;
}

/** Marks a database found corrupt, so that its next open checks it in full (and moves it aside); `why` goes into the mark. */
export function markForCheck(path: string, why: string): void {
  writeFileSync(checkMarkerPath(path), `${new Date().toISOString()} ${why}\n`);
}

/** markForCheck for a gateway that goes on running: the error when the mark could not be written, else undefined. */
export function tryMarkForCheck(path: string, why: string): Error | undefined {
  try {
    markForCheck(path, why);
    return undefined;
  } catch (error) {
    return error instanceof Error ? error : new Error(String(error));
  }
}

/** The block `readAhead` reads with. */
export const READ_AHEAD_BYTES = 1024 * 1024;

/**
 * Reads a file from start to end, so that the page cache holds it before `PRAGMA quick_check`
 * reads its pages in B-tree order, which is all over the file. From a disk whose cache was
 * emptied (a start after a power cycle) the check of 1,000,000 buffered messages (381 MB) took
 * 5.1-5.6 s alone and 0.8-1.2 s after this; from the page cache this adds about 50 ms to
 * 0.35-0.45 s. A file larger than half the memory available now is not read ahead: the cache
 * could not keep it until the check reads it, which would then read it from disk a second time.
 * True when it read the file; `available`: the memory available, in bytes.
 */
export function readAhead(path: string, available = freemem()): boolean {
  const fd = openSync(path, 'r');
  try {
    if (fstatSync(fd).size > available / 2) return false;
    const block = Buffer.allocUnsafe(READ_AHEAD_BYTES);
    while (readSync(fd, block, 0, block.length, null) > 0);
    return true;
  } finally {
    closeSync(fd);
  }
}

/** `PRAGMA quick_check` (the file read ahead first): 'ok', or the problems it lists, joined. */
export function quickCheck(db: Database.Database): string {
  readAhead(db.name);
  return (db.pragma('quick_check') as { quick_check: string }[]).map((r) => r.quick_check).join('; ');
}

/**
 * Opens a database and builds `T` on it, checking its integrity first (`PRAGMA quick_check`).
 * A corrupt database is moved aside (kept for inspection, with its WAL) and a fresh one is
 * started; the caller reports it loudly. A locked or unreadable file is an error, not
 * corruption, and is thrown.
 *
 * With `deferAbove`, the full check of a large database is left for later when its last use
 * ended cleanly: the last connection to close checkpoints the WAL and removes it (a read-only
 * one leaves it empty), so a WAL with frames in it means a crash, a kill or a power cut, and
 * those are checked at once, as is a database whose background check found it corrupt
 * (checkMarkerPath). An empty WAL is one whose frames were all copied into the database and
 * synced, as a clean close leaves it. Opening still reads the header and the schema, which is
 * what a file that is no database at all fails on.
 */
export function openChecked<T>(path: string, options: SqliteOptions, build: (db: Database.Database) => T, check: CheckOptions = {}): CheckedOpen<T> {
  const deferred = deferredCheck(path, check);
  try {
    const value = openAndCheck(path, options, build, deferred === undefined);
    if (deferred === undefined) removeMarker(path);
    return deferred === undefined ? { value } : { value, checkDeferred: deferred };
  } catch (error) {
    if (!existsSync(path) || !isCorruption(error)) throw error;
    const aside = moveAside(path);
    return { value: openAndCheck(path, options, build, true), movedAside: { path: aside, error } };
  }
}

/**
 * Moves a corrupt database aside with its WAL (`<path>.corrupt-<time>`, kept for inspection) and
 * removes its mark; returns where it went. No connection of this process may have it open: one
 * that closed later would remove the new database's WAL by its name.
 */
export function moveAside(path: string): string {
  const aside = `${path}.corrupt-${new Date().toISOString().replace(/[:.]/g, '-')}`;
  for (const suffix of ['', '-wal', '-shm']) {
    if (existsSync(path + suffix)) renameSync(path + suffix, aside + suffix);
  }
  removeMarker(path);
  return aside;
}

/** unlinkSync, not rmSync: rmSync loads a module of Node's at every start (see bin/builtins.js). */
export function removeMarker(path: string): void {
  if (existsSync(checkMarkerPath(path))) unlinkSync(checkMarkerPath(path));
}

/** The database's size when its full check can wait; undefined when it is checked now. */
function deferredCheck(path: string, check: CheckOptions): { bytes: number } | undefined {
  if (check.deferAbove === undefined) return undefined;
  const bytes = statSync(path, { throwIfNoEntry: false })?.size ?? 0;
  if (bytes <= check.deferAbove) return undefined;
  if ((statSync(`${path}-wal`, { throwIfNoEntry: false })?.size ?? 0) > 0 || existsSync(checkMarkerPath(path))) return undefined;
  return { bytes };
}

function openAndCheck<T>(path: string, options: SqliteOptions, build: (db: Database.Database) => T, full: boolean): T {
  const db = openSqlite(path, options);
  try {
    if (full) {
      const result = quickCheck(db);
      if (result !== 'ok') throw Object.assign(new Error(`quick_check: ${result}`), { code: 'SQLITE_CORRUPT' });
    } else {
      db.prepare('SELECT count(*) FROM sqlite_schema').pluck().get();
    }
    return build(db);
  } catch (error) {
    db.close();
    throw error;
  }
}

export function isCorruption(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && (code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_NOTADB');
}
