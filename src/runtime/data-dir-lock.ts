import { existsSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { makeDirectory } from './make-directory.ts';

/** The file in the data directory that `ferry run` holds locked while it runs. */
export function lockPath(dataDir: string): string {
  return join(dataDir, 'gateway.lock');
}

/**
 * `ferry run`'s claim on its data directory: an exclusive SQLite lock (a POSIX record lock, so
 * the kernel lets go of it when the process ends, however it ends) on `gateway.lock`. A second
 * gateway started on the same directory took the first one's connected sessions for what a
 * crash leaves (so `ferry sessions purge` deleted them under their devices), and both delivered
 * the same buffer.
 *
 * The caller keeps the lock referenced until it releases it: a connection the garbage collector
 * closes lets go of its lock.
 */
export class DataDirLock {
  readonly path: string;
  readonly #db: Database.Database;

  private constructor(path: string, db: Database.Database) {
    this.path = path;
    this.#db = db;
  }

  /** Takes the lock, or returns undefined when another process holds it. */
  static acquire(dataDir: string): DataDirLock | undefined {
    makeDirectory(dataDir);
    const path = lockPath(dataDir);
    const db = new Database(path, { timeout: 0 });
    try {
      // No journal file beside it: the transaction never writes.
      db.pragma('journal_mode = MEMORY');
      db.exec('BEGIN EXCLUSIVE');
    } catch (error) {
      db.close();
      if (isBusy(error)) return undefined;
      throw error;
    }
    return new DataDirLock(path, db);
  }

  /** Whether a running gateway holds the data directory's lock; takes nothing itself. */
  static isHeld(dataDir: string): boolean {
    const path = lockPath(dataDir);
    if (!existsSync(path)) return false;
    const db = new Database(path, { readonly: true, fileMustExist: true, timeout: 0 });
    try {
      db.prepare('SELECT count(*) FROM sqlite_master').get();
      return false;
    } catch (error) {
      if (isBusy(error)) return true;
      throw error;
    } finally {
      db.close();
    }
  }

  release(): void {
    if (this.#db.open) this.#db.close();
  }
}

function isBusy(error: unknown): boolean {
  return (error as { code?: unknown }).code === 'SQLITE_BUSY';
}
