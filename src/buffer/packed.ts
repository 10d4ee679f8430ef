import type Database from 'better-sqlite3';
import { INSERT_PACK } from './append.ts';
import { countOf, decode, payloadBytes, slice, timeAt } from './packs.ts';
import type { BridgeUsage, StoredMessage } from './rows.ts';

const NONE: BridgeUsage = { messages: 0, bytes: 0 };
/** Above every seq: a range without an upper end. */
const TOP = Number.MAX_SAFE_INTEGER;

interface Span {
  readonly first: number;
  readonly last: number;
}
interface WithMeta extends Span {
  readonly meta: Buffer;
}
interface Whole extends WithMeta {
  readonly body: Buffer;
}

/** A bridge's log as it is: its messages above the floor, in packs (see schema.ts and packs.ts). */
export interface LogEnds {
  /** The lowest and highest seq in the log, null when it is empty. */
  readonly first: number | null;
  readonly last: number | null;
  /** When its first message was created, ms. */
  readonly oldestAt: number | null;
}

/**
 * Queries and deletions of a bridge's messages by seq over the packs that hold them. Everything
 * at or below the bridge's floor is gone; a range `(lo, hi]` of seqs may begin or end inside a
 * pack, whose part in it is then counted from its meta blob. Deleting from the front (releases,
 * purges, expiry, drop-oldest) removes the packs wholly behind and moves the floor; deleting from
 * the middle (settling messages ahead of a cursor) writes the pack's pieces outside the range
 * anew.
 */
export class Packs {
  readonly #db: Database.Database;
  readonly #statements = new Map<string, Database.Statement>();

  constructor(db: Database.Database) {
    this.#db = db;
  }

  #statement(sql: string): Database.Statement {
    let statement = this.#statements.get(sql);
    if (statement === undefined) {
      statement = this.#db.prepare(sql);
      this.#statements.set(sql, statement);
    }
    return statement;
  }

  /** The seq at and below which the bridge's messages are gone. */
  floor(bridge: string): number {
    return (this.#statement('SELECT seq FROM floors WHERE bridge = ?').pluck().get(bridge) as number | undefined) ?? 0;
  }

  /** The bridge's first pack with a message above `seq`, with its meta blob. */
  #after(bridge: string, seq: number): WithMeta | undefined {
    return this.#statement('SELECT first, last, meta FROM packs WHERE bridge = ? AND last > ? ORDER BY last LIMIT 1').get(bridge, seq) as WithMeta | undefined;
  }

  /** The bridge's first pack with a message above `seq`, from the index alone. */
  #spanAfter(bridge: string, seq: number): Span | undefined {
    return this.#statement('SELECT first, last FROM packs WHERE bridge = ? AND last > ? ORDER BY last LIMIT 1').get(bridge, seq) as Span | undefined;
  }

  #meta(last: number): Buffer {
    return this.#statement('SELECT meta FROM packs WHERE last = ?').pluck().get(last) as Buffer;
  }

  /** The first seq of the bridge's first pack with a message above `seq` (from the index alone). */
  #firstAbove(bridge: string, seq: number): number | undefined {
    return this.#statement('SELECT first FROM packs WHERE bridge = ? AND last > ? ORDER BY last LIMIT 1').pluck().get(bridge, seq) as number | undefined;
  }

  #wholeAfter(bridge: string, seq: number): Whole | undefined {
    return this.#statement('SELECT first, last, meta, body FROM packs WHERE bridge = ? AND last > ? ORDER BY last LIMIT 1').get(bridge, seq) as Whole | undefined;
  }

  /** Up to `limit` messages of the bridge after `afterSeq`, in order. */
  read(bridge: string, afterSeq: number, limit: number): StoredMessage[] {
    const from = Math.max(afterSeq, this.floor(bridge));
    const out: StoredMessage[] = [];
    for (const pack of this.#statement('SELECT first, last, meta, body FROM packs WHERE bridge = ? AND last > ? ORDER BY last').iterate(bridge, from) as IterableIterator<Whole>) {
      decode(out, bridge, pack.first, pack.meta, pack.body, Math.max(0, from + 1 - pack.first), limit - out.length);
      if (out.length >= limit) break;
    }
    return out;
  }

  /** Messages and payload bytes of the bridge with `lo < seq <= hi` (`lo` may be -Infinity, `hi` Infinity). */
  count(bridge: string, lo: number, hi: number): BridgeUsage {
    const l = Math.max(lo, this.floor(bridge));
    const h = Math.min(hi, TOP);
    if (h <= l) return NONE;
    const whole = this.#statement(
      'SELECT coalesce(sum(last - first + 1), 0) AS messages, coalesce(sum(bytes), 0) AS bytes FROM packs WHERE bridge = ? AND last > ? AND last <= ? AND first > ?',
    ).get(bridge, l, h, l) as BridgeUsage;
    let { messages, bytes } = whole;
    // The pack the range begins inside, and the one it ends inside (when another): their meta
    // blobs are read only then.
    const low = this.#spanAfter(bridge, l);
    const lowInside = low !== undefined && low.first <= l;
    if (lowInside) {
      const to = Math.min(low.last, h);
      messages += to - l;
      bytes += payloadBytes(this.#meta(low.last), l + 1 - low.first, to + 1 - low.first);
    }
    if (h < TOP && !(lowInside && low.last > h)) {
      const high = this.#spanAfter(bridge, h);
      if (high !== undefined && high.first <= h) {
        messages += h - high.first + 1;
        bytes += payloadBytes(this.#meta(high.last), 0, h + 1 - high.first);
      }
    }
    return { messages, bytes };
  }

  /** The first and last seq of the bridge's log and when its first message was created. */
  ends(bridge: string): LogEnds {
    const floor = this.floor(bridge);
    const front = this.#after(bridge, floor);
    if (front === undefined) return { first: null, last: null, oldestAt: null };
    const last = this.#statement('SELECT max(last) FROM packs WHERE bridge = ?').pluck().get(bridge) as number;
    const first = Math.max(front.first, floor + 1);
    return { first, last, oldestAt: timeAt(front.meta, first - front.first) };
  }

  /** The bridge's first message after `seq`: its seq and when it was created; undefined when there is none. */
  firstAfter(bridge: string, seq: number): { readonly seq: number; readonly at: number } | undefined {
    const from = Math.max(seq, this.floor(bridge));
    const pack = this.#after(bridge, from);
    if (pack === undefined) return undefined;
    const first = Math.max(pack.first, from + 1);
    return { seq: first, at: timeAt(pack.meta, first - pack.first) };
  }

  /** The highest seq of the bridge's log, or 0. */
  tail(bridge: string): number {
    return (this.#statement('SELECT max(last) FROM packs WHERE bridge = ?').pluck().get(bridge) as number | null) ?? 0;
  }

  /** The seq of the bridge's `n`th message from the front, not above `through`: the end of the `n` oldest (its floor when the log is empty). */
  nth(bridge: string, n: number, through = TOP): number {
    const floor = this.floor(bridge);
    let end = floor;
    let left = n;
    for (const span of this.#statement('SELECT first, last FROM packs WHERE bridge = ? AND last > ? ORDER BY last').iterate(bridge, floor) as IterableIterator<Span>) {
      const start = Math.max(span.first, floor + 1);
      if (start > through) break;
      const size = Math.min(span.last, through) - start + 1;
      if (size >= left) return start + left - 1;
      left -= size;
      end = Math.min(span.last, through);
    }
    return end;
  }

  /**
   * The seq through which the bridge's log, from its front, holds messages created before
   * `before` (ms), `limit` of them at most (-1: no limit); its floor when the first is not.
   */
  createdBeforeThrough(bridge: string, before: number, limit: number): number {
    const floor = this.floor(bridge);
    let through = floor;
    let left = limit < 0 ? Number.POSITIVE_INFINITY : limit;
    for (const pack of this.#statement('SELECT first, last, meta FROM packs WHERE bridge = ? AND last > ? ORDER BY last').iterate(bridge, floor) as IterableIterator<WithMeta>) {
      for (let seq = Math.max(pack.first, floor + 1); seq <= pack.last; seq++) {
        if (left <= 0 || timeAt(pack.meta, seq - pack.first) >= before) return through;
        through = seq;
        left -= 1;
      }
    }
    return through;
  }

  /** Deletes the bridge's messages `lo < seq <= hi`. */
  delete(bridge: string, lo: number, hi: number): void {
    const floor = this.floor(bridge);
    const first = this.#firstAbove(bridge, floor);
    if (first === undefined) return;
    const front = Math.max(first, floor + 1);
    if (hi < front) return;
    if (lo < front) this.#dropThrough(bridge, hi);
    else this.#cut(bridge, lo, hi, floor);
  }

  /** From the front: the packs wholly at or below `through` go, and the floor moves into the one that holds it. */
  #dropThrough(bridge: string, through: number): void {
    this.#statement('DELETE FROM packs WHERE bridge = ? AND last <= ?').run(bridge, through);
    const next = this.#firstAbove(bridge, through);
    if (next !== undefined && next <= through) {
      this.#statement('INSERT INTO floors (bridge, seq) VALUES (?, ?) ON CONFLICT (bridge) DO UPDATE SET seq = max(seq, excluded.seq)').run(bridge, through);
    }
  }

  /** From the middle, `lo` at or above the front: packs wholly inside go, the ones it begins or ends inside are written again without it. */
  #cut(bridge: string, lo: number, hi: number, floor: number): void {
    const low = this.#wholeAfter(bridge, lo);
    const high = this.#wholeAfter(bridge, hi);
    this.#statement('DELETE FROM packs WHERE bridge = ? AND last > ? AND last <= ? AND first > ?').run(bridge, lo, hi, lo);
    if (low !== undefined && low.first <= lo) {
      this.#rewrite(bridge, low, Math.max(low.first, floor + 1), lo);
      if (low.last > hi) this.#rewrite(bridge, low, hi + 1, low.last);
    }
    if (high !== undefined && high.first <= hi && high.first > lo) this.#rewrite(bridge, high, hi + 1, high.last);
  }

  /** Writes messages [from, to] of `pack` as a pack of their own, in place of the pack (removed first, once). */
  #rewrite(bridge: string, pack: Whole, from: number, to: number): void {
    this.#statement('DELETE FROM packs WHERE last = ?').run(pack.last);
    if (to < from) return;
    const piece = slice(pack.meta, pack.body, from - pack.first, to + 1 - pack.first);
    this.#statement(INSERT_PACK).run(to, bridge, from, piece.bytes, piece.meta, piece.body);
  }

  /** Every message (of one bridge, or of all) in seq order, read a pack at a time from one snapshot. */
  *iterate(bridge?: string): Generator<StoredMessage> {
    const floors = new Map((this.#db.prepare('SELECT bridge, seq FROM floors').all() as { bridge: string; seq: number }[]).map((f) => [f.bridge, f.seq]));
    const packs = (
      bridge === undefined
        ? this.#db.prepare('SELECT bridge, first, last, meta, body FROM packs ORDER BY last').iterate()
        : this.#db.prepare('SELECT bridge, first, last, meta, body FROM packs WHERE bridge = ? ORDER BY last').iterate(bridge)
    ) as IterableIterator<Whole & { bridge: string }>;
    for (const pack of packs) {
      const out: StoredMessage[] = [];
      decode(out, pack.bridge, pack.first, pack.meta, pack.body, Math.max(0, (floors.get(pack.bridge) ?? 0) + 1 - pack.first), countOf(pack.meta));
      yield* out;
    }
  }
}
