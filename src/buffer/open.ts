import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Counters } from '../core/component.ts';
import { type BackgroundCheck, checkInBackground } from '../sqlite/background-check.ts';
import { openChecked, tryMarkForCheck } from '../sqlite/open-checked.ts';
import { BUFFER_SCHEMA, legacyRows, migrate } from './schema.ts';
import { BufferStore } from './store.ts';

export const BUFFER_FILE = 'buffer.db';

export function bufferPath(dataDir: string): string {
  return join(dataDir, BUFFER_FILE);
}

export interface OpenedBuffer {
  readonly store: BufferStore;
  /** Where a corrupt database was moved, when it was. */
  readonly movedAside?: string;
  /** Set when the integrity check was left for later (`deferCheckAbove`): run checkBufferLater. */
  readonly checkDeferred?: { readonly bytes: number };
}

/**
 * The buffer's size above which `ferry run` opens a cleanly closed buffer without checking every
 * page first, and checks it in the background once it accepts connections: up to here the check
 * takes tens of milliseconds, and 1,000,000 messages (381 MB) made a start take 1.0 s from the
 * page cache and 6.2 s from disk, against 0.3-0.4 s empty (docs/benchmarks.md, "A start with a backlog").
 */
export const DEFER_CHECK_ABOVE_BYTES = 32 * 1024 * 1024;

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
export function openBuffer(dataDir: string, logger: Logger, options: { readonly deferCheckAbove?: number } = {}): OpenedBuffer {
  const check = options.deferCheckAbove === undefined ? {} : { deferAbove: options.deferCheckAbove };
  const opened = openChecked(
    bufferPath(dataDir),
    { synchronous: 'normal', walAutocheckpointPages: BUFFER_CHECKPOINT_PAGES },
    (db) => {
      const rows = legacyRows(db);
      if (rows === 0) return new BufferStore(db);
      logger.info({ messages: rows }, 'buffer: moving the messages of an earlier version into packs, once after an upgrade (about 7 s a million messages)');
      const started = performance.now();
      let said = started;
      db.exec(BUFFER_SCHEMA);
      migrate(db, (moved) => {
        if (performance.now() - said < 2000) return;
        said = performance.now();
        logger.info({ moved, of: rows }, 'buffer: moving messages into packs');
      });
      logger.info({ messages: rows, ms: Math.round(performance.now() - started) }, 'buffer: messages moved into packs');
      return new BufferStore(db);
    },
    check,
  );
  if (opened.checkDeferred !== undefined) return { store: opened.value, checkDeferred: opened.checkDeferred };
  if (opened.movedAside === undefined) return { store: opened.value };
  const { path: aside, error } = opened.movedAside;
  logger.error({ err: error, movedTo: aside }, 'buffer database is corrupt: moved it aside and started an empty one; messages in it are NOT being delivered');
  return { store: opened.value, movedAside: aside };
}

/**
 * The integrity check of a buffer opened with it deferred, in a process of its own: logged and
 * counted (`buffer.integrity_checks`). `release` ends the hold on the acknowledgements of the
 * messages stored meanwhile (BufferWriter.holdAcks): passed, they are sent; found corrupt, or
 * stopped before the end, none is sent in this run (AckGate). A corrupt buffer is reported as
 * an error and marked, so that the next start checks it first and moves it aside; then
 * `onCorrupt` is called. A check that could not run to the end releases them: it knows nothing.
 */
export function checkBufferLater(dataDir: string, logger: Logger, counters: Counters, release: (passed: boolean) => void, onCorrupt?: () => void): BackgroundCheck {
  const check = checkInBackground(bufferPath(dataDir));
  void check.done.then((result) => {
    release(result.outcome === 'ok' || result.outcome === 'failed');
    if (result.outcome === 'stopped') return; // the gateway stops
    counters.count('buffer.integrity_checks', { result: result.outcome });
    if (result.outcome === 'ok') logger.info({ ms: result.ms }, 'buffer: integrity checked in the background: ok');
    else if (result.outcome === 'corrupt') {
      logger.error({ detail: result.detail, ms: result.ms }, corruptMessage('the background check', result.marked, bufferPath(dataDir)));
      // Unmarked, a restart would defer the check again and find the same: the operator moves it aside.
      if (result.marked) onCorrupt?.();
    } else logger.warn({ detail: result.detail, ms: result.ms }, 'buffer: the background integrity check could not finish; the next clean start tries again');
  });
  return check;
}

/**
 * A statement found the buffer corrupt (SQLITE_CORRUPT) while the gateway runs: it is marked,
 * so that the next start checks it in full and moves it aside, and reported as an error.
 * Returns whether the mark was written (without it a restart would not move the buffer aside).
 */
export function reportCorruptBuffer(path: string, error: unknown, logger: Logger, held: number, foundBy: string): boolean {
  const notMarked = tryMarkForCheck(path, `found corrupt by ${foundBy}: ${String((error as Error).message)}`);
  logger.error({ err: error, held, ...(notMarked === undefined ? {} : { notMarked: notMarked.message }) }, corruptMessage(foundBy, notMarked === undefined, path));
  return notMarked === undefined;
}

function corruptMessage(foundBy: string, marked: boolean, path: string): string {
  return marked
    ? `buffer database is corrupt (found by ${foundBy}): device messages are not acknowledged or stored any more (devices keep them); a restart moves it aside (kept for inspection) and starts an empty one`
    : `buffer database is corrupt (found by ${foundBy}) and the mark for the next start could not be written: device messages are not acknowledged or stored any more; stop the gateway and move ${path} aside`;
}
