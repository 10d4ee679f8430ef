import type Database from 'better-sqlite3';
import type { Envelope } from '../core/envelope.ts';
import type { AgedBounds } from './ages.ts';
import type { BridgeUsage, CursorState, StoredMessage } from './rows.ts';
import { type SeqRange, confirmedRanges, intersect } from './behind.ts';
import { BUFFER_SCHEMA, hasLegacyLog, migrate } from './schema.ts';
import { RecentMessages } from './recent.ts';
import { type AppendEntry, LogPacks } from './append.ts';
import { headersJson, originJson } from './packs.ts';
import { Packs } from './packed.ts';

export type { AppendEntry } from './append.ts';

/**
 * The message log of the durable buffer on SQLite: appends in group commits, reads in seq order,
 * usage per bridge, deletions that signal freed space. Every call is synchronous and runs in the
 * thread that owns the connection; each public write is one transaction. Cursors (cursors.ts)
 * and the operators' queries (store.ts) build on it.
 */
export class BufferLog {
  protected readonly db: Database.Database;
  /** The messages by seq, in their packs. */
  protected readonly packs: Packs;
  readonly #writer: LogPacks;
  readonly #insertDead: Database.Statement;
  readonly #usage = new Map<string, { messages: number; bytes: number }>();
  /**
   * Per bridge and sink, the messages and bytes of the log the sink has confirmed (its "behind":
   * see behind.ts), kept like usage once stats counted them: a sink's pending messages are then
   * its bridge's usage less these, without counting a long backlog on every call.
   */
  readonly #behind = new Map<string, Map<string, BridgeUsage>>();
  /** Per bridge, the dead letters of each sink, kept once counted (stats, the upkeep's trim) like usage. */
  readonly #deadLetters = new Map<string, Map<string, number>>();
  /** PRAGMA data_version when usage was last trusted: it changes when another connection commits. */
  #dataVersion: unknown;
  /** The messages this connection appended last, read from memory while they are all there. */
  readonly #recent: RecentMessages;
  readonly #dataVersionNow: Database.Statement;
  readonly #statements = new Map<string, Database.Statement>();
  readonly #released = new Set<() => void>();
  #releaseQueued = false;

  readonly #appendRows: Database.Transaction<(entries: readonly AppendEntry[], after?: () => void) => number[]>;

  constructor(db: Database.Database) {
    this.db = db;
    this.#dataVersion = db.pragma('data_version', { simple: true });
    this.#dataVersionNow = db.prepare('PRAGMA data_version').pluck();
    this.#recent = new RecentMessages(this.#dataVersion);
    // A new buffer gives freed pages back to the file system bit by bit (reclaimSpace); the
    // mode can only be chosen before the first table exists.
    if (!db.readonly && (db.pragma('page_count', { simple: true }) as number) === 0) db.pragma('auto_vacuum = INCREMENTAL');
    // A reader (`ferry buffer stats`) changes nothing, even in a buffer an older version made.
    if (!db.readonly) {
      db.exec(BUFFER_SCHEMA);
      migrate(db);
    } else if (hasLegacyLog(db)) {
      throw new Error('this buffer was written by an earlier version of Ferry: start the gateway (or run `ferry buffer purge` or `redrive`) once to convert it, then read it');
    }
    this.packs = new Packs(db);
    this.#insertDead = db.prepare(
      `INSERT INTO dead_letters (bridge, sink, reason, attempts, dead_at, seq, id, topic, key, headers, origin, payload, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    this.#writer = new LogPacks(db, (bridge, { sink, reason }, envelope) => this.recordDeadLetter(bridge, sink, reason, 0, 0, envelope));
    this.#appendRows = db.transaction((entries: readonly AppendEntry[], after?: () => void) => {
      const seqs = this.#writer.insert(entries);
      after?.();
      return seqs;
    });
  }

  /**
   * Appends in one transaction (one fsync under synchronous=FULL), then runs `after` inside
   * it (to trim back to a limit); returns the seqs (0 for dead letters).
   */
  append(entries: readonly AppendEntry[], after?: () => void): number[] {
    // Count from disk (once per bridge) before the insert, so the messages are not counted twice.
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
    const forgotten = this.#recent.forgotten;
    try {
      // BEGIN IMMEDIATE: the insert reads (sqlite_sequence) before it writes, and a deferred
      // transaction that read gets SQLITE_BUSY at once, without the busy timeout, when another
      // connection holds the write lock (a `ferry buffer redrive` or `purge` chunk).
      const seqs = this.#appendRows.immediate(entries, after);
      // Committed, unless an outer transaction (a redrive's) may still roll it back; and kept
      // only when nothing was deleted in the transaction (`after` dropping the oldest).
      if (this.db.inTransaction || this.#recent.forgotten !== forgotten) for (const bridge of added.keys()) this.#recent.forget(bridge);
      else this.#recent.add(entries, seqs);
      for (const [bridge, delta] of added) {
        const usage = this.usage(bridge);
        this.#usage.set(bridge, { messages: usage.messages + delta.messages, bytes: usage.bytes + delta.bytes });
      }
      return seqs;
    } catch (error) {
      // Rolled back: so are the counts (`after` may have changed them).
      this.#recent.clear();
      this.#usage.clear();
      for (const [bridge, usage] of before) this.#usage.set(bridge, usage);
      this.#behind.clear();
      this.#deadLetters.clear();
      throw error;
    }
  }

  /** Up to `limit` messages of the bridge after `afterSeq`, in order. */
  read(bridge: string, afterSeq: number, limit: number): StoredMessage[] {
    const recent = this.#recent.read(bridge, afterSeq, limit, this.#dataVersionNow.get());
    return recent ?? this.packs.read(bridge, afterSeq, limit);
  }

  /** The newest seq of a bridge's log, or 0. */
  tail(bridge: string): number {
    return this.packs.tail(bridge);
  }

  /** Messages and payload bytes a bridge holds; kept in memory, counted from disk once. */
  usage(bridge: string): BridgeUsage {
    let usage = this.#usage.get(bridge);
    if (usage === undefined) {
      usage = this.packs.count(bridge, Number.NEGATIVE_INFINITY, Number.POSITIVE_INFINITY);
      this.#usage.set(bridge, usage);
    }
    return usage;
  }

  /**
   * Counts usage from disk again when another connection (another process, such as `ferry
   * buffer purge`) changed the buffer since the last call.
   */
  recount(): void {
    const version = this.db.pragma('data_version', { simple: true });
    if (version === this.#dataVersion) return;
    this.#dataVersion = version;
    this.#usage.clear();
    this.#behind.clear();
    this.#deadLetters.clear();
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

  /** The database file. */
  get path(): string {
    return this.db.name;
  }

  /** Deletes the `count` oldest messages of a bridge, whatever the cursors; returns what it removed. */
  dropOldest(bridge: string, count: number): BridgeUsage {
    return this.dropOldestFreeing(bridge, count, 0);
  }

  /**
   * Deletes the bridge's oldest messages, as few as free at least `messages` of them and
   * `bytes` of payload (either may be 0 or less: nothing needed); returns what it removed.
   */
  dropOldestFreeing(bridge: string, messages: number, bytes: number): BridgeUsage {
    return this.deleteRanges(bridge, [{ lo: Number.NEGATIVE_INFINITY, hi: this.packs.throughFreeing(bridge, messages, bytes) }]);
  }

  /**
   * Deletes a bridge's messages created before `before` (ms) from the front of its log, at most
   * `limit` (-1: all); returns what it removed. In log order (no index on the time to keep up on
   * every append): one behind a newer message (a clock set back, a redriven dead letter) waits.
   */
  expire(bridge: string, before: number, limit = -1): BridgeUsage {
    return this.deleteRanges(bridge, [{ lo: Number.NEGATIVE_INFINITY, hi: this.packs.createdBeforeThrough(bridge, before, limit) }]);
  }

  /**
   * Deletes from the front of a bridge's log what `aged` says is older than its maxAgeMs (see
   * StoredAges), at most `limit` messages (-1: all): every message through `heldThrough`, then
   * on, among those through `earlierThrough`, each created before `createdBefore` and not
   * before `createdSince`. Returns what it removed.
   */
  expireAged(bridge: string, aged: AgedBounds, limit = -1): BridgeUsage {
    const stamped = Math.min(aged.earlierThrough, this.packs.createdBeforeThrough(bridge, aged.createdBefore, limit, aged.createdSince));
    const through = Math.max(stamped, aged.heldThrough);
    const hi = limit < 0 ? through : Math.min(through, this.packs.nth(bridge, limit));
    return this.deleteRanges(bridge, [{ lo: Number.NEGATIVE_INFINITY, hi }]);
  }

  /** A prepared statement, kept: #delete runs on every cursor commit, a hot path. */
  protected statement(sql: string): Database.Statement {
    let statement = this.#statements.get(sql);
    if (statement === undefined) {
      statement = this.db.prepare(sql);
      this.#statements.set(sql, statement);
    }
    return statement;
  }

  /**
   * Deletes the bridge's messages in `ranges` (disjoint); returns what it removed.
   * `confirmedThrough`: they are the messages up to that seq, behind every sink's cursor (the
   * ones all sinks are past), so each sink's kept behind loses them all without counting them again.
   */
  protected deleteRanges(bridge: string, ranges: readonly SeqRange[], confirmedThrough?: number): BridgeUsage {
    const confirmed = confirmedThrough !== undefined;
    const removed = this.countInRanges(bridge, ranges);
    if (removed.messages === 0) return removed;
    if (confirmed) this.#recent.release(bridge, confirmedThrough);
    else this.#recent.forget(bridge);
    const usage = this.usage(bridge);
    const kept = this.#behind.get(bridge);
    const lost = new Map<string, BridgeUsage>();
    if (kept !== undefined) {
      const states = confirmed ? undefined : new Map(this.cursorStates(bridge).map(({ sink, ...state }) => [sink, state]));
      for (const sink of kept.keys()) {
        const state = states?.get(sink);
        if (confirmed) lost.set(sink, removed);
        else if (state === undefined) kept.delete(sink);
        else lost.set(sink, this.countInRanges(bridge, intersect(confirmedRanges(state), ranges)));
      }
    }
    for (const { lo, hi } of ranges) this.packs.delete(bridge, lo, hi);
    this.#usage.set(bridge, { messages: usage.messages - removed.messages, bytes: usage.bytes - removed.bytes });
    for (const [sink, gone] of lost) this.addBehind(bridge, sink, { messages: -gone.messages, bytes: -gone.bytes });
    this.#signalReleased();
    return removed;
  }

  /** What the sink has confirmed of the bridge's log, when kept (see #behind). */
  protected keptBehind(bridge: string, sink: string): BridgeUsage | undefined {
    return this.#behind.get(bridge)?.get(sink);
  }

  protected keepBehind(bridge: string, sink: string, behind: BridgeUsage): void {
    let kept = this.#behind.get(bridge);
    if (kept === undefined) this.#behind.set(bridge, (kept = new Map()));
    kept.set(sink, behind);
  }

  protected addBehind(bridge: string, sink: string, delta: BridgeUsage): void {
    const kept = this.#behind.get(bridge);
    const behind = kept?.get(sink);
    if (kept === undefined || behind === undefined) return;
    kept.set(sink, { messages: behind.messages + delta.messages, bytes: behind.bytes + delta.bytes });
  }

  /** Stops keeping the bridge's behind and dead-letter counts (the next stats counts them again), e.g. after a failed transaction. */
  protected forgetKept(bridge: string): void {
    this.#behind.delete(bridge);
    this.#deadLetters.delete(bridge);
  }

  /** The dead letters of each sink of the bridge: counted once (one pass over an index on (bridge, sink)), then kept. */
  protected deadLetterCounts(bridge: string): ReadonlyMap<string, number> {
    let kept = this.#deadLetters.get(bridge);
    if (kept === undefined) this.#deadLetters.set(bridge, (kept = this.countDeadLetters(bridge)));
    return kept;
  }

  /** The dead letters of each sink of the bridge, counted now (one pass over the index on (bridge, sink)). */
  protected countDeadLetters(bridge: string): Map<string, number> {
    const rows = this.statement('SELECT sink, count(*) AS n FROM dead_letters WHERE bridge = ? GROUP BY sink').all(bridge) as { sink: string; n: number }[];
    return new Map(rows.map((r) => [r.sink, r.n]));
  }

  /** Deletes the bridge's dead letters `where` selects; returns how many. Kept counts lose what it deleted of each sink. */
  protected deleteDeadLetters(bridge: string, where: string, params: readonly unknown[]): number {
    const kept = this.#deadLetters.get(bridge);
    const gone =
      kept === undefined ? [] : (this.statement(`SELECT sink, count(*) AS n FROM dead_letters WHERE ${where} GROUP BY sink`).all(...params) as { sink: string; n: number }[]);
    const { changes } = this.statement(`DELETE FROM dead_letters WHERE ${where}`).run(...params);
    if (kept !== undefined) for (const { sink, n } of gone) kept.set(sink, (kept.get(sink) ?? 0) - n);
    return changes;
  }

  /** Messages and bytes of the bridge's log in `ranges` (disjoint). */
  protected countInRanges(bridge: string, ranges: readonly SeqRange[]): BridgeUsage {
    let messages = 0;
    let bytes = 0;
    for (const { lo, hi } of ranges) {
      const counted = this.packs.count(bridge, lo, hi);
      messages += counted.messages;
      bytes += counted.bytes;
    }
    return { messages, bytes };
  }

  /** Where each sink of the bridge stands, in sink order. */
  protected cursorStates(bridge: string): (CursorState & { readonly sink: string })[] {
    return this.statement('SELECT sink, seq, live_mark AS liveMark, live_seq AS liveSeq FROM cursors WHERE bridge = ? ORDER BY sink').all(bridge) as (CursorState & {
      sink: string;
    })[];
  }

  #signalReleased(): void {
    if (this.#releaseQueued || this.#released.size === 0) return;
    this.#releaseQueued = true;
    queueMicrotask(() => {
      this.#releaseQueued = false;
      for (const listener of this.#released) listener();
    });
  }

  close(): void {
    this.#recent.clear();
    this.db.close();
  }

  /**
   * The one place a dead letter is written: a message refused by `sink` (seq 0 and no attempts
   * for one refused at ingress, which never entered the log).
   */
  protected recordDeadLetter(bridge: string, sink: string, reason: string, attempts: number, seq: number, e: Envelope): void {
    this.#insertDead.run(bridge, sink, reason, attempts, Date.now(), seq, e.id, e.topic, e.key ?? null, headersJson(e), originJson(e.origin), e.payload, e.timestamp);
    const kept = this.#deadLetters.get(bridge);
    kept?.set(sink, (kept.get(sink) ?? 0) + 1);
  }

  /** The highest seq given out so far, or 0. */
  protected lastSeq(): number {
    return this.#writer.lastSeq();
  }
}
