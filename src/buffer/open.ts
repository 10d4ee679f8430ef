import { join } from 'node:path';
import type { Logger } from 'pino';
import { openChecked } from '../sqlite/open-checked.ts';
import { needsIndexUpgrade } from './schema.ts';
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
 * WAL pages after which a commit of the buffer checkpoints the WAL into the database (SQLite's
 * default is 1,000). A checkpoint runs inside the commit, on the event loop, with two fsyncs of
 * its own; the buffer's pages are written and freed again within seconds, so a longer WAL also
 * copies each hot page (the B-trees' right edges, the free list) fewer times. At 4,000 (a WAL of
 * up to about 16 MiB) a QoS 0 flood was taken about 7% faster and end to end cost about 5% less
 * CPU per message (docs/benchmarks.md, "Checkpoints every 4,000 pages"). Durability does not
 * change: under `synchronous: full` every commit is still synced before its PUBACK.
 */
export const BUFFER_CHECKPOINT_PAGES = 4000;

/**
 * Opens the buffer, checking its integrity first. A corrupt database is moved aside (kept
 * for inspection, with its WAL) and a fresh one is started; the caller reports it loudly.
 *
 * The connection commits with `synchronous=NORMAL`: under `buffer.synchronous: full` the
 * BufferWriter makes each of its commits durable itself, syncing the WAL off the event loop
 * before it acks (src/sqlite/wal-sync.ts). The other writes (cursors, releases, dead letters) need no fsync
 * of their own: one lost to a power cut means a message delivered again, never one lost, and the
 * next sync of the WAL covers them anyway.
 */
export function openBuffer(dataDir: string, logger: Logger): OpenedBuffer {
  const opened = openChecked(bufferPath(dataDir), { synchronous: 'normal', walAutocheckpointPages: BUFFER_CHECKPOINT_PAGES }, (db) => {
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
