import type Database from 'better-sqlite3';
import type { CursorState, StoredMessage } from './rows.ts';
import { BufferLog } from './log.ts';
import { newlyConfirmed, runs } from './behind.ts';

/**
 * Each sink's cursor on its bridge's log (the last seq it confirmed), live-first replay, and
 * settling messages: a message is deleted once every sink of its bridge is past it.
 */
export class BufferCursors extends BufferLog {
  readonly #setCursor: Database.Statement;
  readonly #minCursor: Database.Statement;

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
      const start = this.packs.ends(bridge).first;
      const from = start === null ? this.lastSeq() : start - 1;
      const insert = this.db.prepare('INSERT OR IGNORE INTO cursors (bridge, sink, seq) VALUES (?, ?, ?)');
      return sinks.filter((sink) => insert.run(bridge, sink, from).changes > 0);
    })();
  }

  /** Removes the cursors of the bridge's sinks not in `sinks`, so they hold nothing back. */
  retainSinks(bridge: string, sinks: readonly string[]): void {
    this.forgetKept(bridge);
    this.db.transaction(() => {
      const placeholders = sinks.map(() => '?').join(', ');
      this.db.prepare(`DELETE FROM cursors WHERE bridge = ? AND sink NOT IN (${placeholders})`).run(bridge, ...sinks);
      this.releaseBridge(bridge);
    })();
  }

  /** Removes these sinks' cursors (added for a bridge version that never ran). */
  removeSinks(bridge: string, sinks: readonly string[]): void {
    if (sinks.length === 0) return;
    this.forgetKept(bridge);
    this.db.transaction(() => {
      const placeholders = sinks.map(() => '?').join(', ');
      this.db.prepare(`DELETE FROM cursors WHERE bridge = ? AND sink IN (${placeholders})`).run(bridge, ...sinks);
      this.releaseBridge(bridge);
    })();
  }

  cursor(bridge: string, sink: string): number {
    return this.cursorState(bridge, sink).seq;
  }

  cursorState(bridge: string, sink: string): CursorState {
    const row = this.statement('SELECT seq, live_mark AS liveMark, live_seq AS liveSeq FROM cursors WHERE bridge = ? AND sink = ?').get(bridge, sink) as CursorState | undefined;
    if (row === undefined) throw new Error(`no cursor for sink '${sink}' of bridge '${bridge}'`);
    return row;
  }

  /** When the oldest message after a sink's cursor was created (ms), or null when there is none; cheap (one index lookup). */
  oldestPendingAt(bridge: string, sink: string): number | null {
    const cursor = this.statement('SELECT seq FROM cursors WHERE bridge = ? AND sink = ?').pluck().get(bridge, sink) as number | undefined;
    return cursor === undefined ? null : (this.packs.firstAfter(bridge, cursor)?.at ?? null);
  }

  /** Splits a sink's log at `mark` for live-first replay: later messages go first. */
  startLive(bridge: string, sink: string, mark: number): void {
    this.#confirming(bridge, sink, () => this.db.prepare('UPDATE cursors SET live_mark = ?, live_seq = ? WHERE bridge = ? AND sink = ?').run(mark, mark, bridge, sink));
  }

  /** Confirms live messages up to `seq`. */
  commitLive(bridge: string, sink: string, seq: number): void {
    this.#confirming(bridge, sink, () => this.db.prepare('UPDATE cursors SET live_seq = ? WHERE bridge = ? AND sink = ? AND live_seq < ?').run(seq, bridge, sink, seq));
  }

  /** The backlog is delivered: the sink's cursor jumps to its live position. */
  endLive(bridge: string, sink: string): void {
    this.#transaction(bridge, () => {
      this.#confirming(bridge, sink, () =>
        this.db.prepare('UPDATE cursors SET seq = max(seq, live_seq), live_mark = NULL, live_seq = NULL WHERE bridge = ? AND sink = ?').run(bridge, sink),
      );
      this.releaseBridge(bridge);
    });
  }

  /** Moves a sink's cursor forward (never back) and releases what every sink is past. */
  commit(bridge: string, sink: string, seq: number): void {
    this.#transaction(bridge, () => {
      this.#confirming(bridge, sink, () => this.#setCursor.run(seq, bridge, sink, seq));
      this.releaseBridge(bridge);
    });
  }

  /**
   * Records a message a sink rejected for good, and moves that sink past it: its cursor, or
   * its live position when the message is in the live part of a live-first replay.
   */
  deadLetter(sink: string, message: StoredMessage, reason: string, attempts: number, live = false): void {
    this.#transaction(message.bridge, () => {
      this.recordDeadLetter(message.bridge, sink, reason, attempts, message.seq, message.envelope);
      if (live) this.commitLive(message.bridge, sink, message.seq);
      else this.#confirming(message.bridge, sink, () => this.#setCursor.run(message.seq, message.bridge, sink, message.seq));
      this.releaseBridge(message.bridge);
    });
  }

  /**
   * Settles messages ahead of the cursor of a bridge's only sink, while an older one is still
   * out (a handler holding it): the acked ones leave the log, the rejected ones move to the
   * dead letters. The cursor stays where it is; a reader started from it later does not see
   * them again. Throws for a bridge with other sinks, whose cursors may still need the rows.
   */
  settleAhead(bridge: string, sink: string, acked: readonly StoredMessage[], rejected: readonly { message: StoredMessage; reason: string; attempts: number }[]): void {
    if (acked.length === 0 && rejected.length === 0) return;
    this.#transaction(bridge, () => {
      const sinks = this.statement('SELECT sink FROM cursors WHERE bridge = ?').all(bridge) as { sink: string }[];
      if (sinks.length !== 1 || sinks[0]?.sink !== sink) throw new Error(`settleAhead: bridge '${bridge}' has other readers than '${sink}'`);
      for (const { message, reason, attempts } of rejected) this.recordDeadLetter(message.bridge, sink, reason, attempts, message.seq, message.envelope);
      const seqs = [...acked, ...rejected.map((r) => r.message)].map((m) => m.seq);
      this.deleteRanges(bridge, runs(seqs));
    });
  }

  protected releaseBridge(bridge: string): void {
    const { seq } = this.#minCursor.get(bridge) as { seq: number | null };
    if (seq !== null) this.deleteRanges(bridge, [{ lo: Number.NEGATIVE_INFINITY, hi: seq }], seq);
  }

  /**
   * Runs `move` (an update of the sink's cursor) and, when the sink's behind is kept, adds what
   * the move confirmed: the rows between the old and new position, counted before any release
   * deletes them (a window's worth, not the backlog).
   */
  #confirming(bridge: string, sink: string, move: () => unknown): void {
    if (this.keptBehind(bridge, sink) === undefined) {
      move();
      return;
    }
    try {
      const before = this.cursorState(bridge, sink);
      move();
      const after = this.cursorState(bridge, sink);
      const gained = this.countInRanges(bridge, newlyConfirmed(before, after));
      // Nothing Ferry does takes a confirmation back; counted anyway, so that kept figures cannot drift.
      const lost = this.countInRanges(bridge, newlyConfirmed(after, before));
      this.addBehind(bridge, sink, { messages: gained.messages - lost.messages, bytes: gained.bytes - lost.bytes });
    } catch (error) {
      this.forgetKept(bridge);
      throw error;
    }
  }

  /** One transaction; when it fails the kept behind counts of the bridge are dropped, as they may count what was rolled back. */
  #transaction(bridge: string, fn: () => void): void {
    try {
      // IMMEDIATE, as appends (BufferLog.append): waits for another process's write lock.
      this.db.transaction(fn).immediate();
    } catch (error) {
      this.forgetKept(bridge);
      throw error;
    }
  }

  constructor(db: Database.Database) {
    super(db);
    this.#setCursor = db.prepare('UPDATE cursors SET seq = ? WHERE bridge = ? AND sink = ? AND seq < ?');
    this.#minCursor = db.prepare('SELECT min(seq) AS seq FROM cursors WHERE bridge = ?');
  }
}
