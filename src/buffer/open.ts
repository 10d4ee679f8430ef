import { existsSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { openSqlite, type Synchronous } from '../sqlite/connection.ts';
import { BufferStore } from './store.ts';

export const BUFFER_FILE = 'buffer.db';

export function bufferPath(dataDir: string): string {
  return join(dataDir, BUFFER_FILE);
}

export interface OpenedBuffer {
  readonly store: BufferStore;
  /** Where a corrupt database was moved, when it was. */
  readonly movedAside?: string;
}

/**
 * Opens the buffer, checking its integrity first. A corrupt database is moved aside (kept
 * for inspection, with its WAL) and a fresh one is started; the caller reports it loudly.
 */
export function openBuffer(dataDir: string, synchronous: Synchronous, logger: Logger): OpenedBuffer {
  const path = bufferPath(dataDir);
  try {
    return { store: openChecked(path, synchronous) };
  } catch (error) {
    if (!existsSync(path) || !isCorruption(error)) throw error;
    const aside = `${path}.corrupt-${new Date().toISOString().replace(/[:.]/g, '-')}`;
    for (const suffix of ['', '-wal', '-shm']) {
      if (existsSync(path + suffix)) renameSync(path + suffix, aside + suffix);
    }
    logger.error({ err: error, movedTo: aside }, 'buffer database is corrupt: moved it aside and started an empty one; messages in it are NOT being delivered');
    return { store: openChecked(path, synchronous), movedAside: aside };
  }
}

function openChecked(path: string, synchronous: Synchronous): BufferStore {
  const db = openSqlite(path, { synchronous });
  try {
    const rows = db.pragma('quick_check') as { quick_check: string }[];
    const result = rows.map((r) => r.quick_check).join('; ');
    if (result !== 'ok') throw Object.assign(new Error(`quick_check: ${result}`), { code: 'SQLITE_CORRUPT' });
    return new BufferStore(db);
  } catch (error) {
    db.close();
    throw error;
  }
}

/** Only a damaged file is moved aside; a locked or unreadable one is an error to report. */
function isCorruption(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && (code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_NOTADB');
}
