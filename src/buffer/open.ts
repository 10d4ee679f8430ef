import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Synchronous } from '../sqlite/connection.ts';
import { openChecked } from '../sqlite/open-checked.ts';
import { needsIndexUpgrade } from './log.ts';
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
  const opened = openChecked(bufferPath(dataDir), { synchronous }, (db) => {
    if (!needsIndexUpgrade(db)) return new BufferStore(db);
    const { n } = db.prepare('SELECT count(*) AS n FROM messages').get() as { n: number };
    logger.info({ messages: n }, "buffer: building the index that counts each sink's backlog, once after an upgrade (about a second per million messages)");
    const started = performance.now();
    const store = new BufferStore(db);
    logger.info({ ms: Math.round(performance.now() - started) }, 'buffer: index built');
    return store;
  });
  if (opened.movedAside === undefined) return { store: opened.value };
  const { path: aside, error } = opened.movedAside;
  logger.error({ err: error, movedTo: aside }, 'buffer database is corrupt: moved it aside and started an empty one; messages in it are NOT being delivered');
  return { store: opened.value, movedAside: aside };
}
