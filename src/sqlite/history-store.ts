import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { setImmediate } from 'node:timers/promises';
import type Database from 'better-sqlite3';
import { PackWriter, decodeRecord, idsOf, offsets, topicStartsWith } from '../buffer/packs.ts';
import { type Envelope, isUuidV7 } from '../core/envelope.ts';
import { filterHead, topicMatches } from '../core/topic.ts';
import { openSqlite, type Synchronous } from './connection.ts';
import { HISTORY_GUARD, convertStep, hasLegacyHistory, legacyHistoryRows, legacyLatest } from './history-legacy.ts';
import { type Fdatasync, WalSync, walSyncFailure } from './wal-sync.ts';

export const HISTORY_FILE = 'history.db';

export interface HistoryRow {
  readonly seq: number;
  readonly id: string;
  readonly bridge: string;
  readonly topic: string;
  readonly clientId: string | null;
  readonly qos: number | null;
  readonly payload: Buffer;
  readonly receivedAt: number;
}

export function historyPath(dataDir: string): string {
  return join(dataDir, HISTORY_FILE);
}

export const HISTORY_SCHEMA = `
-- The history: runs of one bridge's messages with consecutive seqs, [first, last], a row each,
-- in the buffer's pack format (src/buffer/packs.ts). Seqs are given out across bridges in the
-- order the messages are written; AUTOINCREMENT never gives one out twice. min_id and max_id
-- bound the pack's ids made by Ferry (UUIDv7s, in the order made; '' when it has none): a
-- message delivered again (its id kept already) is found through them, without an index entry
-- a message.
CREATE TABLE IF NOT EXISTS history_packs (
  last INTEGER PRIMARY KEY AUTOINCREMENT,
  bridge TEXT NOT NULL,
  first INTEGER NOT NULL,
  min_id TEXT NOT NULL,
  max_id TEXT NOT NULL,
  meta BLOB NOT NULL,
  body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS history_packs_bridge ON history_packs (bridge, last, first);
CREATE INDEX IF NOT EXISTS history_packs_ids ON history_packs (bridge, max_id, min_id);
-- The other ids (a source's messageId template, a handler's), whose order says nothing: one
-- row each, while their message is kept.
CREATE TABLE IF NOT EXISTS history_ids (bridge TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY (bridge, id)) WITHOUT ROWID;
-- Per bridge, the seq at and below which its messages are gone (beyond its keep): the front of
-- its first pack; the pack goes when all of it is gone.
CREATE TABLE IF NOT EXISTS history_floors (bridge TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
-- The messages each bridge has in history, kept with them in the same transactions.
CREATE TABLE IF NOT EXISTS history_counts (bridge TEXT PRIMARY KEY, rows INTEGER NOT NULL) WITHOUT ROWID;
`;

export const INSERT_PACK = 'INSERT INTO history_packs (last, bridge, first, min_id, max_id, meta, body) VALUES (?, ?, ?, ?, ?, ?, ?)';

interface PackRow {
  last: number;
  bridge: string;
  first: number;
  meta: Buffer;
  body: Buffer;
}

/**
 * The gateway's local message history: the latest messages of each bridge that writes to
 * it, kept on disk so that `ferry history` and operators can see what devices sent.
 */
export class HistoryWriter {
  readonly #path: string;
  readonly #db: Database.Database;
  readonly #append: (bridge: string, envelopes: readonly Envelope[], keep: number) => void;
  /** Bridges whose messages this writer counted: their stored count is then trusted. */
  readonly #counted = new Set<string>();
  /**
   * Under `full`, what makes an append durable before it resolves: the connection commits
   * without an fsync and this syncs the WAL on the thread pool, as the buffer's writer does
   * (wal-sync.ts); the event loop goes on meanwhile. Undefined under `normal`.
   */
  readonly #walSync: WalSync | undefined;
  readonly #pack = new PackWriter();
  readonly #release: () => void;

  /**
   * `options.fdatasync`: for a test, the fdatasync of a failing disk. `options.converting`: told
   * the number of messages before a history written by an earlier version is converted.
   */
  constructor(dataDir: string, synchronous: Synchronous, options: { fdatasync?: Fdatasync; converting?: (messages: number) => void } = {}) {
    const path = historyPath(dataDir);
    this.#path = path;
    this.#db = openForWriting(path);
    try {
      this.#append = historyAppend(this.#db, this.#counted, this.#pack, options.converting);
    } catch (error) {
      this.#db.close();
      throw error;
    }
    this.#walSync = synchronous === 'full' ? new WalSync(path, options) : undefined;
    this.#release = holdOpen(path);
  }

  /** Appends in one transaction; resolves once it is on disk (under `full`) or committed. */
  async append(bridge: string, envelopes: readonly Envelope[], keep: number): Promise<void> {
    const walSync = this.#walSync;
    if (walSync?.failure !== undefined) throw syncFailed(this.#path, walSync.failure);
    this.#append(bridge, envelopes, keep);
    this.#counted.add(bridge);
    if (walSync === undefined) return;
    await new Promise<void>((resolve, reject) => walSync.after((error) => (error === undefined ? resolve() : reject(error))));
  }

  /** Closes the database; an append waiting for its sync is synced now. */
  close(): void {
    this.#walSync?.flushSync();
    this.#walSync?.close();
    this.#db.close();
    this.#release();
  }
}

/**
 * Makes the history's tables (converting what an earlier version left) and returns its append:
 * one transaction that packs `envelopes` not kept yet, trims the bridge to `keep` and keeps its
 * count. `countedBridges`: those whose stored count is trusted; `packs`: the writer to pack with.
 */
function historyAppend(
  db: Database.Database,
  countedBridges: ReadonlySet<string>,
  packs: PackWriter,
  converting?: (messages: number) => void,
): (bridge: string, envelopes: readonly Envelope[], keep: number) => void {
  // What convertEarlierHistory left, or all of it here, step after step without a pause.
  if (hasLegacyHistory(db)) converting?.(legacyHistoryRows(db));
  for (const _ of conversionSteps(db));
  const insert = db.prepare(INSERT_PACK);
  const lastSeq = db.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'history_packs'").pluck();
  const counted = db.prepare<[string], number>('SELECT rows FROM history_counts WHERE bridge = ?').pluck();
  const floorOf = db.prepare<[string], number>('SELECT seq FROM history_floors WHERE bridge = ?').pluck();
  // Once per bridge and writer: a history whose counts were lost is counted afresh.
  const count = db.prepare<[number, string, number], number>('SELECT coalesce(sum(last - max(first, ?) + 1), 0) FROM history_packs WHERE bridge = ? AND last > ?').pluck();
  const setCount = db.prepare('INSERT INTO history_counts (bridge, rows) VALUES (?, ?) ON CONFLICT (bridge) DO UPDATE SET rows = excluded.rows');
  const front = db.prepare<[string, number], { last: number; first: number }>('SELECT last, first FROM history_packs WHERE bridge = ? AND last > ? ORDER BY last LIMIT 1');
  const deletePack = db.prepare('DELETE FROM history_packs WHERE last = ?');
  const setFloor = db.prepare('INSERT INTO history_floors (bridge, seq) VALUES (?, ?) ON CONFLICT (bridge) DO UPDATE SET seq = excluded.seq');
  const newestId = db.prepare<[string], string | null>('SELECT max(max_id) FROM history_packs WHERE bridge = ?').pluck();
  const overlapping = db.prepare<[string, string, string], { meta: Buffer; body: Buffer }>('SELECT meta, body FROM history_packs WHERE bridge = ? AND max_id >= ? AND min_id <= ?');
  const keepId = db.prepare('INSERT OR IGNORE INTO history_ids (bridge, id) VALUES (?, ?)');
  /**
   * The envelopes whose ids the bridge does not keep yet, each once; `others`: whether any id
   * of the batch is not a UUIDv7 (when none is, the pack's range needs no test of each id).
   */
  const unkept = (bridge: string, envelopes: readonly Envelope[]): { fresh: readonly Envelope[]; others: boolean } => {
    // Ferry's ids are UUIDv7s made at ingress, in order: a batch of new messages is usually
    // above every such id kept, and then nothing is looked up.
    let low: string | undefined;
    let high = '';
    let ascending = true;
    let others = false;
    for (const { id } of envelopes) {
      if (!isUuidV7(id)) others = true;
      else if (low === undefined) low = high = id;
      else {
        if (id <= high) ascending = false;
        else high = id;
        if (id < low) low = id;
      }
    }
    let kept: Set<string> | undefined;
    if (low !== undefined && !(ascending && low > (newestId.get(bridge) ?? ''))) {
      // Delivered again, or out of order: the ids of the packs whose range could hold them.
      kept = new Set();
      for (const pack of overlapping.all(bridge, low, high)) for (const id of idsOf(pack.meta, pack.body)) kept.add(id);
    }
    if (kept === undefined && !others) return { fresh: envelopes, others };
    const fresh: Envelope[] = [];
    for (const e of envelopes) {
      if (!isUuidV7(e.id)) {
        if (keepId.run(bridge, e.id).changes === 0) continue;
      } else if (kept !== undefined) {
        if (kept.has(e.id)) continue;
        kept.add(e.id);
      }
      fresh.push(e);
    }
    return { fresh, others };
  };
  const hasOtherIds = db.prepare<[string], number>('SELECT 1 FROM history_ids WHERE bridge = ? LIMIT 1').pluck();
  const packIds = db.prepare<[number], { meta: Buffer; body: Buffer }>('SELECT meta, body FROM history_packs WHERE last = ?');
  const forgetId = db.prepare('DELETE FROM history_ids WHERE bridge = ? AND id = ?');
  /** Removes the bridge's oldest `excess` messages (at most all of them); returns how many went. */
  const trim = (bridge: string, excess: number): number => {
    let floor = floorOf.get(bridge) ?? 0;
    let removed = 0;
    const others = hasOtherIds.get(bridge) !== undefined;
    while (removed < excess) {
      const pack = front.get(bridge, floor);
      if (pack === undefined) break;
      const from = Math.max(pack.first, floor + 1);
      const to = Math.min(pack.last, from + (excess - removed) - 1);
      if (others) {
        // The other ids of the messages going: their message may be kept again.
        const { meta, body } = packIds.get(pack.last) as { meta: Buffer; body: Buffer };
        const ids = idsOf(meta, body);
        for (let seq = from; seq <= to; seq++) {
          const id = ids[seq - pack.first] as string;
          if (!isUuidV7(id)) forgetId.run(bridge, id);
        }
      }
      if (to === pack.last) deletePack.run(pack.last);
      removed += to - from + 1;
      floor = to;
    }
    setFloor.run(bridge, floor);
    return removed;
  };
  return db.transaction((bridge: string, envelopes: readonly Envelope[], keep: number) => {
    let rows = countedBridges.has(bridge) ? counted.get(bridge) : undefined;
    if (rows === undefined) {
      const floor = floorOf.get(bridge) ?? 0;
      rows = count.get(floor + 1, bridge, floor) ?? 0;
    }
    const { fresh, others } = envelopes.length === 0 ? { fresh: envelopes, others: false } : unkept(bridge, envelopes);
    const pack = packs;
    let next = ((lastSeq.get() as number | undefined) ?? 0) + 1;
    let first = next;
    let min = '';
    let max = '';
    const close = () => {
      insert.run(next - 1, bridge, first, min, max, pack.meta(), pack.body());
      pack.reset();
      first = next;
      min = '';
      max = '';
    };
    try {
      for (const e of fresh) {
        if (!others || isUuidV7(e.id)) {
          if (min === '' || e.id < min) min = e.id;
          if (e.id > max) max = e.id;
        }
        pack.add(e);
        next += 1;
        if (pack.full) close();
      }
      if (pack.count > 0) close();
    } finally {
      pack.reset();
    }
    rows += fresh.length;
    if (rows > keep) rows -= trim(bridge, rows - keep);
    setCount.run(bridge, rows);
  });
}

/**
 * Converts a history written by an earlier version (a row a message) into packs, a step (a
 * transaction of 20,000 messages) at a time with the event loop going on between them: what a
 * history sink does before its writer opens, so that the devices' messages are not held up
 * meanwhile (its own wait in the buffer). `started` is told the messages before the first step.
 * Resolves with the messages moved and the time it took, or undefined when there was nothing to
 * convert.
 */
export async function convertEarlierHistory(dataDir: string, started?: (messages: number) => void): Promise<{ messages: number; ms: number } | undefined> {
  const path = historyPath(dataDir);
  if (!existsSync(path)) return undefined;
  const db = openForWriting(path);
  const release = holdOpen(path);
  try {
    if (!hasLegacyHistory(db)) return undefined;
    const begun = performance.now();
    const messages = legacyHistoryRows(db);
    started?.(messages);
    for (const _ of conversionSteps(db)) await setImmediate();
    return { messages, ms: Math.round(performance.now() - begun) };
  } finally {
    db.close();
    release();
  }
}

/** Connections of this process that write each history file: one is moved aside only when none is open (moveAside). */
const writing = new Map<string, number>();

export function historyWritersOpen(path: string): number {
  return writing.get(path) ?? 0;
}

/** Counts a writing connection to `path` as open until the function returned is called (once). */
function holdOpen(path: string): () => void {
  writing.set(path, historyWritersOpen(path) + 1);
  let held = true;
  return () => {
    if (held) writing.set(path, historyWritersOpen(path) - 1);
    held = false;
  };
}

/**
 * The history file opened to write. A file whose WAL failed to sync is not written again until
 * the process restarts and SQLite recovers it from what is on disk (WalSync); the sink's
 * messages wait in the buffer.
 */
function openForWriting(path: string): Database.Database {
  const failed = walSyncFailure(path);
  if (failed !== undefined) throw syncFailed(path, failed);
  return openSqlite(path, { synchronous: 'normal' });
}

/**
 * Makes the packs' tables, moves what is left of an earlier version's table into them a step (a
 * transaction) at a time, and sets the guard against earlier versions last. It yields between
 * two steps: the caller goes on at once, or after a turn of the event loop.
 */
function* conversionSteps(db: Database.Database): Generator<void, void, void> {
  db.exec(HISTORY_SCHEMA);
  const insert = db.prepare(INSERT_PACK);
  while (convertStep(db, insert) > 0) yield;
  db.exec(HISTORY_GUARD);
}

function syncFailed(path: string, error: Error): Error {
  return new Error(`the disk failed to sync ${path} (${error.message}): the history is not written again until the gateway restarts`, { cause: error });
}

export interface HistoryQuery {
  readonly bridge?: string;
  /** Only messages whose topic begins with this (case-sensitive, as MQTT topics are). */
  readonly topicPrefix?: string;
  /** Only messages whose topic matches this MQTT topic filter (`+` one level, `#` the rest). */
  readonly topicFilter?: string;
  readonly limit: number;
  /** Only messages with a larger seq (for following). */
  readonly afterSeq?: number;
  /** The oldest `limit` matching instead of the newest (following: none skipped when more came). */
  readonly oldest?: boolean;
}

/** Reads the history while a gateway writes to it (WAL readers do not block the writer). */
export class HistoryReader {
  readonly #db: Database.Database;

  constructor(dataDir: string) {
    this.#db = openSqlite(historyPath(dataDir), { readonly: true });
  }

  /** The newest `limit` messages matching (the oldest, with `oldest`), oldest first. */
  latest(query: HistoryQuery): HistoryRow[] {
    const db = this.#db;
    // A history no gateway of this version has written yet is read as the earlier versions kept it.
    if (hasLegacyHistory(db)) return legacyLatest(db, query);
    const floors = new Map(db.prepare<[], [string, number]>('SELECT bridge, seq FROM history_floors').raw().all());
    const after = query.afterSeq ?? 0;
    const packs = db.prepare<unknown[], PackRow>(
      `SELECT last, bridge, first, meta, body FROM history_packs WHERE last > ?${query.bridge === undefined ? '' : ' AND bridge = ?'} ORDER BY last ${query.oldest === true ? 'ASC' : 'DESC'}`,
    );
    const out: HistoryRow[] = [];
    const { limit } = query;
    if (limit <= 0) return out;
    const prefix = query.topicPrefix === undefined ? undefined : Buffer.from(query.topicPrefix);
    const filter = query.topicFilter;
    const head = filter === undefined ? undefined : Buffer.from(filterHead(filter));
    for (const pack of packs.iterate(...(query.bridge === undefined ? [after] : [after, query.bridge]))) {
      const from = Math.max(0, Math.max(after, floors.get(pack.bridge) ?? 0) + 1 - pack.first);
      const starts = offsets(pack.meta);
      // Newest first (oldest first, with `oldest`): only the messages shown are decoded, the
      // others' topics compared as bytes.
      const step = query.oldest === true ? 1 : -1;
      for (let i = step > 0 ? from : starts.length - 1; i >= from && i < starts.length && out.length < limit; i += step) {
        const at = starts[i] as number;
        if (prefix !== undefined && !topicStartsWith(pack.body, at, prefix)) continue;
        if (head !== undefined && !topicStartsWith(pack.body, at, head)) continue;
        const { seq, bridge, envelope: e } = decodeRecord(pack.bridge, pack.first + i, pack.body, at);
        if (filter !== undefined && !topicMatches(filter, e.topic)) continue;
        out.push({ seq, id: e.id, bridge, topic: e.topic, clientId: e.origin.clientId ?? null, qos: e.origin.qos ?? null, payload: e.payload as Buffer, receivedAt: e.timestamp });
      }
      if (out.length >= limit) break;
    }
    return query.oldest === true ? out : out.reverse();
  }

  /** The bridges that have messages in the history, by name. */
  bridges(): string[] {
    const table = hasLegacyHistory(this.#db) ? 'history' : 'history_packs';
    return this.#db.prepare<[], string>(`SELECT DISTINCT bridge FROM ${table} ORDER BY bridge`).pluck().all();
  }

  close(): void {
    this.#db.close();
  }
}
