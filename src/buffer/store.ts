import { type BridgeStats, type BridgeUsage, type DeadLetter, type DeadLetterRow, type SinkCursor, type StoredMessage, toDeadLetter, toStored } from './rows.ts';
import { BufferCursors } from './cursors.ts';

export type { AppendEntry } from './log.ts';
export type { BridgeStats, BridgeUsage, CursorState, DeadLetter, SinkCursor, SinkStats, StoredMessage } from './rows.ts';

/**
 * The store-and-forward log on SQLite. Every call is synchronous and runs in the one thread
 * that owns the connection; each public write is one transaction. A bridge's messages are
 * read by each of its sinks through a cursor (the last seq that sink confirmed), and a
 * message is deleted once every sink of its bridge is past it.
 *
 * The log itself is BufferLog (log.ts), the cursors BufferCursors (cursors.ts); this adds what
 * operators and `ferry buffer` ask of it: statistics, exports, purges, redrives, upkeep.
 */
export class BufferStore extends BufferCursors {
  bridges(): string[] {
    const rows = this.db.prepare('SELECT bridge FROM cursors UNION SELECT DISTINCT bridge FROM packs UNION SELECT DISTINCT bridge FROM dead_letters ORDER BY 1').all() as {
      bridge: string;
    }[];
    return rows.map((r) => r.bridge);
  }

  /**
   * The bridge's depth and each sink's backlog. `/api/status`, `/metrics` and the status page
   * ask for it with `kept` while the gateway runs: the totals are then the counts the log keeps
   * (right for the connection that writes the buffer, the gateway's; dropped and counted again
   * when another process changed the buffer since), and each sink's backlog is counted once,
   * then kept as its cursor moves and messages leave. Without it (`ferry buffer stats`, another
   * process's view) everything is counted now, from the index of the packs (a pack's span and
   * bytes; the part of a pack a range begins or ends inside from its meta blob). The oldest
   * messages are index lookups.
   */
  stats(bridge: string, options: { readonly kept?: boolean } = {}): BridgeStats {
    // Kept figures are dropped first when another process (`ferry buffer purge`, `redrive`)
    // committed since: one PRAGMA, so that they are never behind such a change.
    if (options.kept === true) this.recount();
    const { messages, bytes } = options.kept === true ? this.usage(bridge) : this.packs.count(bridge, Number.NEGATIVE_INFINITY, Number.POSITIVE_INFINITY);
    const ends = this.packs.ends(bridge);
    const cursors = this.cursorStates(bridge);
    // The dead letters of each sink (one pass over the index on (bridge, sink), kept with `kept`), and their total.
    const dead = options.kept === true ? this.deadLetterCounts(bridge) : this.countDeadLetters(bridge);
    const sinks = cursors.map(({ sink, seq, liveMark, liveSeq }) => {
      let above: BridgeUsage = { messages: 0, bytes: 0 };
      let oldestPendingAt: number | null = null;
      const kept = options.kept === true ? this.keptBehind(bridge, sink) : undefined;
      if (kept !== undefined) {
        // Never below 0, whatever another process did in between.
        above = { messages: Math.max(0, messages - kept.messages), bytes: Math.max(0, bytes - kept.bytes) };
      } else if (ends.first !== null && ends.last !== null && seq < ends.last) {
        above = this.packs.count(bridge, seq, Number.POSITIVE_INFINITY);
        // Under live-first replay, (live_mark, live_seq] is confirmed too.
        const from = Math.max(seq, liveMark ?? 0);
        if (liveSeq !== null && liveSeq > from) {
          const live = this.packs.count(bridge, from, liveSeq);
          above = { messages: Math.max(0, above.messages - live.messages), bytes: Math.max(0, above.bytes - live.bytes) };
        }
      }
      // From now on the sink's confirmed part is kept as cursors move and messages leave (log.ts).
      if (kept === undefined && options.kept === true) this.keepBehind(bridge, sink, { messages: messages - above.messages, bytes: bytes - above.bytes });
      if (ends.last !== null && seq < ends.last) {
        let first = this.packs.firstAfter(bridge, seq);
        // Under live-first replay, what it confirmed of the live part is not pending.
        if (first !== undefined && liveMark !== null && liveSeq !== null && first.seq > liveMark && first.seq <= liveSeq) first = this.packs.firstAfter(bridge, liveSeq);
        oldestPendingAt = first?.at ?? null;
      }
      return {
        sink,
        cursor: seq,
        liveMark,
        pending: above.messages,
        pendingBytes: above.bytes,
        oldestPendingAt,
        deadLetters: dead.get(sink) ?? 0,
      };
    });
    let deadLetters = 0;
    for (const n of dead.values()) deadLetters += n;
    return { bridge, messages, bytes, oldestAt: ends.oldestAt, lastSeq: this.lastSeq(), sinks, deadLetters };
  }

  /** Every sink's cursor (of one bridge, or of all), in bridge and sink order. */
  cursors(bridge?: string): SinkCursor[] {
    const sql = 'SELECT bridge, sink, seq FROM cursors';
    return (bridge === undefined ? this.db.prepare(`${sql} ORDER BY bridge, sink`).all() : this.db.prepare(`${sql} WHERE bridge = ? ORDER BY sink`).all(bridge)) as SinkCursor[];
  }

  /**
   * Every buffered message (of one bridge, or of all) in seq order, read a pack at a time from
   * one snapshot. The connection can run nothing else until the iteration ends.
   */
  *iterateMessages(bridge?: string): Generator<StoredMessage> {
    yield* this.packs.iterate(bridge);
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
    return this.deleteRanges(bridge, [{ lo: Number.NEGATIVE_INFINITY, hi: this.packs.nth(bridge, limit, throughSeq) }]);
  }

  /** Deletes up to `limit` of a bridge's oldest dead letters with dl_seq <= `throughDlSeq`; returns how many. */
  purgeDeadLetters(bridge: string, throughDlSeq: number, limit: number): number {
    return this.deleteDeadLetters(bridge, 'dl_seq IN (SELECT dl_seq FROM dead_letters WHERE bridge = ? AND dl_seq <= ? ORDER BY dl_seq LIMIT ?)', [bridge, throughDlSeq, limit]);
  }

  /**
   * Deletes a bridge's oldest dead letters beyond the newest `keep`, at most `limit` at a
   * time; returns how many.
   */
  trimDeadLetters(bridge: string, keep: number, limit = 10_000): number {
    let total = 0;
    for (const n of this.deadLetterCounts(bridge).values()) total += n;
    if (total <= keep) return 0;
    return this.deleteDeadLetters(bridge, 'dl_seq IN (SELECT dl_seq FROM dead_letters WHERE bridge = ? ORDER BY dl_seq LIMIT ?)', [bridge, Math.min(limit, total - keep)]);
  }

  /**
   * `redrive` in bounded steps: moves up to `limit` of a bridge's oldest dead letters with
   * dl_seq <= `throughDlSeq` to the end of its log, in one transaction; returns how many.
   */
  redriveSome(bridge: string, throughDlSeq: number, limit: number): number {
    try {
      return this.db.transaction(() => {
        const rows = this.db.prepare('SELECT * FROM dead_letters WHERE bridge = ? AND dl_seq <= ? ORDER BY dl_seq LIMIT ?').all(bridge, throughDlSeq, limit) as DeadLetterRow[];
        const last = rows.at(-1);
        if (last === undefined) return 0;
        this.append(rows.map((row) => ({ bridge, envelope: toStored(row).envelope })));
        this.deleteDeadLetters(bridge, 'bridge = ? AND dl_seq <= ?', [bridge, last.dl_seq]);
        return rows.length;
      })();
    } catch (error) {
      // Rolled back: the kept counts may count what was undone.
      this.forgetKept(bridge);
      throw error;
    }
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
      if (this.statement('SELECT 1 FROM packs LIMIT 1').get() !== undefined) return 0;
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

  /** A pragma on the buffer's connection, for tools and tests (inspection, fault injection). */
  pragma(source: string, options?: { readonly simple?: boolean }): unknown {
    return this.db.pragma(source, options);
  }
}
