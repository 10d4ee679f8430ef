import type Database from 'better-sqlite3';
import type { Envelope } from '../core/envelope.ts';
import {
  type BridgeStats,
  type BridgeUsage,
  type CursorState,
  type DeadLetter,
  type DeadLetterRow,
  type MessageRow,
  type SinkCursor,
  type StoredMessage,
  toDeadLetter,
  toStored,
} from './rows.ts';
import { BUFFER_SCHEMA } from './schema.ts';

const EMPTY: Readonly<Record<string, string>> = {};

/**
 * Rows per multi-row INSERT in an append: one statement step instead of 32 saves about a
 * quarter of the CPU an appended row costs (measured with 430-row transactions).
 */
const INSERT_ROWS = 32;

const headersJson = (e: Envelope): string => (e.headers === EMPTY || Object.keys(e.headers).length === 0 ? '{}' : JSON.stringify(e.headers));

/** Origins are shared between a device's messages (see the MQTT broker): their JSON is kept. */
const originJsons = new WeakMap<object, string>();
function originJson(origin: Envelope['origin']): string {
  let json = originJsons.get(origin);
  if (json === undefined) {
    json = JSON.stringify(origin);
    originJsons.set(origin, json);
  }
  return json;
}

/** Whether the INSERT_ROWS entries from `from` all go to the log (none is a dead letter). */
function fullRun(entries: readonly AppendEntry[], from: number): boolean {
  for (let j = from; j < from + INSERT_ROWS; j++) if ((entries[j] as AppendEntry).deadLetter !== undefined) return false;
  return true;
}

/**
 * A message to append to a bridge's log, or, with `deadLetter`, straight to its dead letters
 * (a message refused at ingress: it never enters the log and gets seq 0 there).
 */
export interface AppendEntry {
  readonly bridge: string;
  readonly envelope: Envelope;
  readonly deadLetter?: { readonly sink: string; readonly reason: string };
}

export type { BridgeStats, BridgeUsage, CursorState, DeadLetter, SinkCursor, SinkStats, StoredMessage } from './rows.ts';

/**
 * The store-and-forward log on SQLite. Every call is synchronous and runs in the one thread
 * that owns the connection; each public write is one transaction. A bridge's messages are
 * read by each of its sinks through a cursor (the last seq that sink confirmed), and a
 * message is deleted once every sink of its bridge is past it.
 */
export class BufferStore {
  readonly db: Database.Database;
  readonly #insert: Database.Statement;
  readonly #insertMany: Database.Statement;
  readonly #insertDead: Database.Statement;
  readonly #read: Database.Statement;
  readonly #setCursor: Database.Statement;
  readonly #minCursor: Database.Statement;
  readonly #usage = new Map<string, { messages: number; bytes: number }>();
  readonly #statements = new Map<string, Database.Statement>();
  readonly #released = new Set<() => void>();
  #releaseQueued = false;

  readonly #appendRows: (entries: readonly AppendEntry[], after?: () => void) => number[];

  constructor(db: Database.Database) {
    this.db = db;
    // A new buffer gives freed pages back to the file system bit by bit (reclaimSpace); the
    // mode can only be chosen before the first table exists.
    if (!db.readonly && (db.pragma('page_count', { simple: true }) as number) === 0) db.pragma('auto_vacuum = INCREMENTAL');
    db.exec(BUFFER_SCHEMA);
    migrate(db);
    this.#insert = db.prepare(
      'INSERT INTO messages (bridge, id, topic, key, headers, origin, payload, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
    );
    this.#insertDead = db.prepare(
      `INSERT INTO dead_letters (bridge, sink, reason, attempts, dead_at, seq, id, topic, key, headers, origin, payload, created_at)
       VALUES (?, ?, ?, 0, ?, 0, ?, ?, ?, ?, ?, ?, ?)`,
    );
    this.#insertMany = db.prepare(
      `INSERT INTO messages (bridge, id, topic, key, headers, origin, payload, created_at) VALUES ${new Array<string>(INSERT_ROWS).fill('(?, ?, ?, ?, ?, ?, ?, ?)').join(', ')}`,
    );
    const params = new Array<unknown>(INSERT_ROWS * 8);
    this.#appendRows = db.transaction((entries: readonly AppendEntry[], after?: () => void) => {
      const seqs = new Array<number>(entries.length);
      for (let i = 0; i < entries.length; ) {
        const { bridge, envelope: e, deadLetter } = entries[i] as AppendEntry;
        if (deadLetter !== undefined) {
          this.#insertDead.run(bridge, deadLetter.sink, deadLetter.reason, Date.now(), e.id, e.topic, e.key ?? null, headersJson(e), originJson(e.origin), e.payload, e.timestamp);
          seqs[i] = 0;
          i += 1;
          continue;
        }
        if (i + INSERT_ROWS <= entries.length && fullRun(entries, i)) {
          // One statement for INSERT_ROWS rows: their seqs are consecutive, ending at the last.
          for (let j = 0; j < INSERT_ROWS; j++) {
            const entry = entries[i + j] as AppendEntry;
            const m = entry.envelope;
            const k = j * 8;
            params[k] = entry.bridge;
            params[k + 1] = m.id;
            params[k + 2] = m.topic;
            params[k + 3] = m.key ?? null;
            params[k + 4] = headersJson(m);
            params[k + 5] = originJson(m.origin);
            params[k + 6] = m.payload;
            params[k + 7] = m.timestamp;
          }
          const last = Number(this.#insertMany.run(params).lastInsertRowid);
          for (let j = 0; j < INSERT_ROWS; j++) seqs[i + j] = last - INSERT_ROWS + 1 + j;
          params.fill(undefined);
          i += INSERT_ROWS;
          continue;
        }
        seqs[i] = Number(this.#insert.run(bridge, e.id, e.topic, e.key ?? null, headersJson(e), originJson(e.origin), e.payload, e.timestamp).lastInsertRowid);
        i += 1;
      }
      after?.();
      return seqs;
    });
    this.#read = db.prepare('SELECT * FROM messages WHERE bridge = ? AND seq > ? ORDER BY seq LIMIT ?');
    this.#setCursor = db.prepare('UPDATE cursors SET seq = ? WHERE bridge = ? AND sink = ? AND seq < ?');
    this.#minCursor = db.prepare('SELECT min(seq) AS seq FROM cursors WHERE bridge = ?');
  }

  /**
   * Declares the sinks of a bridge. A new sink starts at the bridge's oldest buffered
   * message; cursors of sinks no longer listed are removed so they hold nothing back.
   */
  registerBridge(bridge: string, sinks: readonly string[]): void {
    this.db.transaction(() => {
      this.addSinks(bridge, sinks);
      this.retainSinks(bridge, sinks);
    })();
  }

  /** Adds a cursor, at the bridge's oldest buffered message, for each sink that has none; returns those added. */
  addSinks(bridge: string, sinks: readonly string[]): string[] {
    return this.db.transaction(() => {
      const start = (this.db.prepare('SELECT min(seq) AS seq FROM messages WHERE bridge = ?').get(bridge) as { seq: number | null }).seq;
      const from = start === null ? this.#lastSeq() : start - 1;
      const insert = this.db.prepare('INSERT OR IGNORE INTO cursors (bridge, sink, seq) VALUES (?, ?, ?)');
      return sinks.filter((sink) => insert.run(bridge, sink, from).changes > 0);
    })();
  }

  /** Removes the cursors of the bridge's sinks not in `sinks`, so they hold nothing back. */
  retainSinks(bridge: string, sinks: readonly string[]): void {
    this.db.transaction(() => {
      const placeholders = sinks.map(() => '?').join(', ');
      this.db.prepare(`DELETE FROM cursors WHERE bridge = ? AND sink NOT IN (${placeholders})`).run(bridge, ...sinks);
      this.#releaseBridge(bridge);
    })();
  }

  /** Removes these sinks' cursors (added for a bridge version that never ran). */
  removeSinks(bridge: string, sinks: readonly string[]): void {
    if (sinks.length === 0) return;
    this.db.transaction(() => {
      const placeholders = sinks.map(() => '?').join(', ');
      this.db.prepare(`DELETE FROM cursors WHERE bridge = ? AND sink IN (${placeholders})`).run(bridge, ...sinks);
      this.#releaseBridge(bridge);
    })();
  }

  /**
   * Appends in one transaction (one fsync under synchronous=FULL), then runs `after` inside
   * it (to trim back to a limit); returns the seqs (0 for dead letters).
   */
  append(entries: readonly AppendEntry[], after?: () => void): number[] {
    // Count from disk (once per bridge) before the insert, so the rows are not counted twice.
    const added = new Map<string, { messages: number; bytes: number }>();
    for (const { bridge, envelope, deadLetter } of entries) {
      if (deadLetter !== undefined) continue;
      let delta = added.get(bridge);
      if (delta === undefined) {
        this.usage(bridge);
        delta = { messages: 0, bytes: 0 };
        added.set(bridge, delta);
      }
      delta.messages += 1;
      delta.bytes += envelope.payload.byteLength;
    }
    const before = new Map(this.#usage);
    try {
      const seqs = this.#appendRows(entries, after);
      for (const [bridge, delta] of added) {
        const usage = this.usage(bridge);
        this.#usage.set(bridge, { messages: usage.messages + delta.messages, bytes: usage.bytes + delta.bytes });
      }
      return seqs;
    } catch (error) {
      // Rolled back: so are the counts (`after` may have changed them).
      this.#usage.clear();
      for (const [bridge, usage] of before) this.#usage.set(bridge, usage);
      throw error;
    }
  }


  /** Up to `limit` messages of the bridge after `afterSeq`, in order. */
  read(bridge: string, afterSeq: number, limit: number): StoredMessage[] {
    return (this.#read.all(bridge, afterSeq, limit) as MessageRow[]).map(toStored);
  }

  cursor(bridge: string, sink: string): number {
    return this.cursorState(bridge, sink).seq;
  }

  cursorState(bridge: string, sink: string): CursorState {
    const row = this.db.prepare('SELECT seq, live_mark AS liveMark, live_seq AS liveSeq FROM cursors WHERE bridge = ? AND sink = ?').get(bridge, sink) as
      | CursorState
      | undefined;
    if (row === undefined) throw new Error(`no cursor for sink '${sink}' of bridge '${bridge}'`);
    return row;
  }

  /** When the oldest message after a sink's cursor was created (ms), or null when there is none; cheap (one index lookup). */
  oldestPendingAt(bridge: string, sink: string): number | null {
    const row = this.#statement(
      'SELECT m.created_at AS at FROM messages m, cursors c WHERE c.bridge = ? AND c.sink = ? AND m.bridge = c.bridge AND m.seq > c.seq ORDER BY m.seq LIMIT 1',
    ).get(bridge, sink) as { at: number } | undefined;
    return row?.at ?? null;
  }

  /** The newest seq of a bridge's log, or 0. */
  tail(bridge: string): number {
    return (this.db.prepare('SELECT max(seq) AS seq FROM messages WHERE bridge = ?').get(bridge) as { seq: number | null }).seq ?? 0;
  }

  /** Splits a sink's log at `mark` for live-first replay: later messages go first. */
  startLive(bridge: string, sink: string, mark: number): void {
    this.db.prepare('UPDATE cursors SET live_mark = ?, live_seq = ? WHERE bridge = ? AND sink = ?').run(mark, mark, bridge, sink);
  }

  /** Confirms live messages up to `seq`. */
  commitLive(bridge: string, sink: string, seq: number): void {
    this.db.prepare('UPDATE cursors SET live_seq = ? WHERE bridge = ? AND sink = ? AND live_seq < ?').run(seq, bridge, sink, seq);
  }

  /** The backlog is delivered: the sink's cursor jumps to its live position. */
  endLive(bridge: string, sink: string): void {
    this.db.transaction(() => {
      this.db.prepare('UPDATE cursors SET seq = max(seq, live_seq), live_mark = NULL, live_seq = NULL WHERE bridge = ? AND sink = ?').run(bridge, sink);
      this.#releaseBridge(bridge);
    })();
  }

  /** Moves a sink's cursor forward (never back) and releases what every sink is past. */
  commit(bridge: string, sink: string, seq: number): void {
    this.db.transaction(() => {
      this.#setCursor.run(seq, bridge, sink, seq);
      this.#releaseBridge(bridge);
    })();
  }

  /**
   * Records a message a sink rejected for good, and moves that sink past it: its cursor, or
   * its live position when the message is in the live part of a live-first replay.
   */
  deadLetter(sink: string, message: StoredMessage, reason: string, attempts: number, live = false): void {
    this.db.transaction(() => {
      this.#recordDeadLetter(sink, message, reason, attempts);
      if (live) this.commitLive(message.bridge, sink, message.seq);
      else this.#setCursor.run(message.seq, message.bridge, sink, message.seq);
      this.#releaseBridge(message.bridge);
    })();
  }

  /**
   * Settles messages ahead of the cursor of a bridge's only sink, while an older one is still
   * out (a handler holding it): the acked ones leave the log, the rejected ones move to the
   * dead letters. The cursor stays where it is; a reader started from it later does not see
   * them again. Throws for a bridge with other sinks, whose cursors may still need the rows.
   */
  settleAhead(bridge: string, sink: string, acked: readonly StoredMessage[], rejected: readonly { message: StoredMessage; reason: string; attempts: number }[]): void {
    if (acked.length === 0 && rejected.length === 0) return;
    this.db.transaction(() => {
      const sinks = this.#statement('SELECT sink FROM cursors WHERE bridge = ?').all(bridge) as { sink: string }[];
      if (sinks.length !== 1 || sinks[0]?.sink !== sink) throw new Error(`settleAhead: bridge '${bridge}' has other readers than '${sink}'`);
      for (const { message, reason, attempts } of rejected) this.#recordDeadLetter(sink, message, reason, attempts);
      const seqs = [...acked, ...rejected.map((r) => r.message)].map((m) => m.seq);
      this.#delete(bridge, 'bridge = ? AND seq IN (SELECT value FROM json_each(?))', [bridge, JSON.stringify(seqs)]);
    })();
  }

  /** Messages and payload bytes a bridge holds; kept in memory, counted from disk once. */
  usage(bridge: string): BridgeUsage {
    let usage = this.#usage.get(bridge);
    if (usage === undefined) {
      usage = this.db.prepare('SELECT count(*) AS messages, coalesce(sum(length(payload)), 0) AS bytes FROM messages WHERE bridge = ?').get(bridge) as { messages: number; bytes: number };
      this.#usage.set(bridge, usage);
    }
    return usage;
  }

  /** Counts usage from disk again (another process, such as `ferry buffer purge`, may have changed it). */
  recount(): void {
    this.#usage.clear();
    this.#signalReleased();
  }

  /**
   * Calls `listener` after messages left the log (a cursor moved, a message expired or was
   * purged) or usage was counted again: space may be free. Called once per event-loop turn at
   * most, after the transaction that removed them, never inside it. Returns the unsubscribe.
   */
  onReleased(listener: () => void): () => void {
    this.#released.add(listener);
    return () => this.#released.delete(listener);
  }

  /** False once closed. */
  get isOpen(): boolean {
    return this.db.open;
  }

  /** Deletes the `count` oldest messages of a bridge, whatever the cursors; returns what it removed. */
  dropOldest(bridge: string, count: number): BridgeUsage {
    return this.#delete(bridge, 'seq IN (SELECT seq FROM messages WHERE bridge = ? ORDER BY seq LIMIT ?)', [bridge, count]);
  }

  /** Deletes messages of a bridge created before `before` (ms); returns what it removed. */
  expire(bridge: string, before: number): BridgeUsage {
    return this.#delete(bridge, 'bridge = ? AND created_at < ?', [bridge, before]);
  }

  /** A prepared statement, kept: #delete runs on every cursor commit, a hot path. */
  #statement(sql: string): Database.Statement {
    let statement = this.#statements.get(sql);
    if (statement === undefined) {
      statement = this.db.prepare(sql);
      this.#statements.set(sql, statement);
    }
    return statement;
  }

  #delete(bridge: string, where: string, params: readonly unknown[]): BridgeUsage {
    const removed = this.#statement(`SELECT count(*) AS messages, coalesce(sum(length(payload)), 0) AS bytes FROM messages WHERE ${where}`).get(
      ...params,
    ) as BridgeUsage;
    if (removed.messages === 0) return removed;
    const usage = this.usage(bridge);
    this.#statement(`DELETE FROM messages WHERE ${where}`).run(...params);
    this.#usage.set(bridge, { messages: usage.messages - removed.messages, bytes: usage.bytes - removed.bytes });
    this.#signalReleased();
    return removed;
  }

  #signalReleased(): void {
    if (this.#releaseQueued || this.#released.size === 0) return;
    this.#releaseQueued = true;
    queueMicrotask(() => {
      this.#releaseQueued = false;
      for (const listener of this.#released) listener();
    });
  }

  bridges(): string[] {
    const rows = this.db
      .prepare('SELECT bridge FROM cursors UNION SELECT DISTINCT bridge FROM messages UNION SELECT DISTINCT bridge FROM dead_letters ORDER BY 1')
      .all() as { bridge: string }[];
    return rows.map((r) => r.bridge);
  }

  stats(bridge: string): BridgeStats {
    const totals = this.db
      .prepare('SELECT count(*) AS messages, coalesce(sum(length(payload)), 0) AS bytes, min(created_at) AS oldestAt FROM messages WHERE bridge = ?')
      .get(bridge) as { messages: number; bytes: number; oldestAt: number | null };
    const cursors = this.db.prepare('SELECT sink, seq, live_mark AS liveMark, live_seq AS liveSeq FROM cursors WHERE bridge = ? ORDER BY sink').all(bridge) as (CursorState & {
      sink: string;
    })[];
    // Pending: after the cursor, less what live-first replay already confirmed.
    const pending = this.db.prepare(
      `SELECT count(*) AS n, coalesce(sum(length(payload)), 0) AS bytes, min(created_at) AS oldest FROM messages
       WHERE bridge = ? AND seq > ? AND NOT (seq > ? AND seq <= ?)`,
    );
    const dead = this.db.prepare('SELECT count(*) AS n FROM dead_letters WHERE bridge = ? AND sink = ?');
    const sinks = cursors.map(({ sink, seq, liveMark, liveSeq }) => {
      const p = pending.get(bridge, seq, liveMark ?? 0, liveSeq ?? 0) as { n: number; bytes: number; oldest: number | null };
      return { sink, cursor: seq, liveMark, pending: p.n, pendingBytes: p.bytes, oldestPendingAt: p.oldest, deadLetters: (dead.get(bridge, sink) as { n: number }).n };
    });
    const deadLetters = (this.db.prepare('SELECT count(*) AS n FROM dead_letters WHERE bridge = ?').get(bridge) as { n: number }).n;
    return { bridge, ...totals, lastSeq: this.#lastSeq(), sinks, deadLetters };
  }

  /** Every sink's cursor (of one bridge, or of all), in bridge and sink order. */
  cursors(bridge?: string): SinkCursor[] {
    const sql = 'SELECT bridge, sink, seq FROM cursors';
    return (
      bridge === undefined ? this.db.prepare(`${sql} ORDER BY bridge, sink`).all() : this.db.prepare(`${sql} WHERE bridge = ? ORDER BY sink`).all(bridge)
    ) as SinkCursor[];
  }

  /**
   * Every buffered message (of one bridge, or of all) in seq order, read a row at a time from
   * one snapshot. The connection can run nothing else until the iteration ends.
   */
  *iterateMessages(bridge?: string): Generator<StoredMessage> {
    const rows =
      bridge === undefined
        ? this.db.prepare('SELECT * FROM messages ORDER BY seq').iterate()
        : this.db.prepare('SELECT * FROM messages WHERE bridge = ? ORDER BY seq').iterate(bridge);
    for (const row of rows) yield toStored(row as MessageRow);
  }

  /** Every dead letter (of one bridge, or of all) in the order they were recorded, like `iterateMessages`. */
  *iterateDeadLetters(bridge?: string): Generator<DeadLetter> {
    const rows =
      bridge === undefined
        ? this.db.prepare('SELECT * FROM dead_letters ORDER BY dl_seq').iterate()
        : this.db.prepare('SELECT * FROM dead_letters WHERE bridge = ? ORDER BY dl_seq').iterate(bridge);
    for (const row of rows) yield toDeadLetter(row as DeadLetterRow);
  }

  /** The newest dead letter's dl_seq of a bridge, or 0. */
  lastDeadLetter(bridge: string): number {
    return (this.db.prepare('SELECT max(dl_seq) AS n FROM dead_letters WHERE bridge = ?').get(bridge) as { n: number | null }).n ?? 0;
  }

  /**
   * Deletes up to `limit` of a bridge's oldest messages with seq <= `throughSeq`, whatever the
   * cursors; returns what it removed. In a loop, deletes a large backlog in short transactions.
   */
  purgeSome(bridge: string, throughSeq: number, limit: number): BridgeUsage {
    return this.#delete(bridge, 'seq IN (SELECT seq FROM messages WHERE bridge = ? AND seq <= ? ORDER BY seq LIMIT ?)', [bridge, throughSeq, limit]);
  }

  /** Deletes up to `limit` of a bridge's oldest dead letters with dl_seq <= `throughDlSeq`; returns how many. */
  purgeDeadLetters(bridge: string, throughDlSeq: number, limit: number): number {
    return this.db
      .prepare('DELETE FROM dead_letters WHERE dl_seq IN (SELECT dl_seq FROM dead_letters WHERE bridge = ? AND dl_seq <= ? ORDER BY dl_seq LIMIT ?)')
      .run(bridge, throughDlSeq, limit).changes;
  }

  /**
   * Deletes a bridge's oldest dead letters beyond the newest `keep`, at most `limit` at a
   * time; returns how many.
   */
  trimDeadLetters(bridge: string, keep: number, limit = 10_000): number {
    const total = (this.#statement('SELECT count(*) AS n FROM dead_letters WHERE bridge = ?').get(bridge) as { n: number }).n;
    if (total <= keep) return 0;
    return this.#statement('DELETE FROM dead_letters WHERE dl_seq IN (SELECT dl_seq FROM dead_letters WHERE bridge = ? ORDER BY dl_seq LIMIT ?)').run(bridge, Math.min(limit, total - keep)).changes;
  }

  /**
   * `redrive` in bounded steps: moves up to `limit` of a bridge's oldest dead letters with
   * dl_seq <= `throughDlSeq` to the end of its log, in one transaction; returns how many.
   */
  redriveSome(bridge: string, throughDlSeq: number, limit: number): number {
    return this.db.transaction(() => {
      const rows = this.db.prepare('SELECT * FROM dead_letters WHERE bridge = ? AND dl_seq <= ? ORDER BY dl_seq LIMIT ?').all(bridge, throughDlSeq, limit) as DeadLetterRow[];
      const last = rows.at(-1);
      if (last === undefined) return 0;
      this.append(rows.map((row) => ({ bridge, envelope: toStored(row).envelope })));
      this.db.prepare('DELETE FROM dead_letters WHERE bridge = ? AND dl_seq <= ?').run(bridge, last.dl_seq);
      return rows.length;
    })();
  }

  /**
   * Runs `fn` in one transaction that takes the write lock first (BEGIN IMMEDIATE), waiting
   * up to busy_timeout for it. For writers in another process than the gateway: a deferred
   * transaction that reads before it writes fails at once with SQLITE_BUSY when the gateway
   * commits in between, whatever the busy timeout.
   */
  writeTransaction<T>(fn: () => T): T {
    return this.db.transaction(fn).immediate();
  }

  /**
   * Gives free pages back to the file system once more than `minBytes` are free (after a
   * backlog drained, say), at most `maxPages` at a time, and truncates the WAL: the buffer file
   * does not keep the size of its largest backlog (issue 16). A buffer made before incremental
   * vacuum is converted by one VACUUM the first time its log is empty. Returns the bytes freed.
   */
  reclaimSpace(minBytes = 1024 * 1024, maxPages = 4096): number {
    const pageSize = this.db.pragma('page_size', { simple: true }) as number;
    const free = this.db.pragma('freelist_count', { simple: true }) as number;
    if (free * pageSize < minBytes) return 0;
    if ((this.db.pragma('auto_vacuum', { simple: true }) as number) !== 2) {
      if (this.#statement('SELECT 1 FROM messages LIMIT 1').get() !== undefined) return 0;
      this.db.pragma('auto_vacuum = INCREMENTAL');
      this.db.exec('VACUUM');
    } else {
      this.db.pragma(`incremental_vacuum(${maxPages})`);
    }
    this.db.pragma('wal_checkpoint(TRUNCATE)');
    return (free - (this.db.pragma('freelist_count', { simple: true }) as number)) * pageSize;
  }

  /**
   * Runs `fn`'s reads on one snapshot of the database (a read transaction): a report made of
   * several queries is consistent even while the gateway commits meanwhile (issue 16).
   */
  snapshot<T>(fn: () => T): T {
    return this.db.transaction(fn).deferred();
  }

  close(): void {
    this.db.close();
  }

  /** The one place a dead letter of a message from the log is written. */
  #recordDeadLetter(sink: string, message: StoredMessage, reason: string, attempts: number): void {
    const e = message.envelope;
    this.#statement(
      `INSERT INTO dead_letters (bridge, sink, reason, attempts, dead_at, seq, id, topic, key, headers, origin, payload, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(message.bridge, sink, reason, attempts, Date.now(), message.seq, e.id, e.topic, e.key ?? null, JSON.stringify(e.headers), JSON.stringify(e.origin), e.payload, e.timestamp);
  }

  #lastSeq(): number {
    const row = this.db.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").get() as { seq: number } | undefined;
    return row?.seq ?? 0;
  }

  #releaseBridge(bridge: string): void {
    const { seq } = this.#minCursor.get(bridge) as { seq: number | null };
    if (seq !== null) this.#delete(bridge, 'bridge = ? AND seq <= ?', [bridge, seq]);
  }
}

/** Brings a buffer made by an earlier version up to the current schema. */
function migrate(db: Database.Database): void {
  const columns = (db.pragma('table_info(cursors)') as { name: string }[]).map((c) => c.name);
  if (!columns.includes('live_mark')) {
    db.exec('ALTER TABLE cursors ADD COLUMN live_mark INTEGER; ALTER TABLE cursors ADD COLUMN live_seq INTEGER;');
  }
}
