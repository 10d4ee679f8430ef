import type Database from 'better-sqlite3';
import { PACK_MESSAGES, countOf, decode, payloadBytes, timeAt } from './packs.ts';
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
  /** The lowest seq in the log and the last of its last pack, null when it is empty. */
  readonly first: number | null;
  readonly last: number | null;
  /** When its first message was created, ms. */
  readonly oldestAt: number | null;
}

/**
 * Queries and deletions of a bridge's messages by seq over the packs that hold them. Everything
 * at or below the bridge's floor is gone, and so is every message recorded as settled; a range
 * `(lo, hi]` of seqs may begin or end inside a pack, whose part in it is then counted from its
 * meta blob. Deleting from the front (releases, purges, expiry, drop-oldest) removes the packs
 * wholly behind and moves the floor; deleting from the middle (settling messages ahead of a
 * cursor) records the messages as settled. No pack is ever written again.
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

  /** The bridge's first pack with a message above `seq`, from the index alone. */
  #spanAfter(bridge: string, seq: number): Span | undefined {
    return this.#statement('SELECT first, last FROM packs WHERE bridge = ? AND last > ? ORDER BY last LIMIT 1').get(bridge, seq) as Span | undefined;
  }

  #meta(last: number): Buffer {
    return this.#statement('SELECT meta FROM packs WHERE last = ?').pluck().get(last) as Buffer;
  }

  /** Up to `limit` messages of the bridge after `afterSeq`, in order. */
  read(bridge: string, afterSeq: number, limit: number): StoredMessage[] {
    const from = Math.max(afterSeq, this.floor(bridge));
    const out: StoredMessage[] = [];
    for (const pack of this.#statement('SELECT first, last, meta, body FROM packs WHERE bridge = ? AND last > ? ORDER BY last').iterate(bridge, from) as IterableIterator<Whole>) {
      decode(out, bridge, pack.first, pack.meta, pack.body, Math.max(0, from + 1 - pack.first), limit - out.length, this.#settledIn(bridge, from, pack.last));
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
    const settled = this.#statement('SELECT count(*) AS messages, coalesce(sum(bytes), 0) AS bytes FROM settled WHERE bridge = ? AND seq > ? AND seq <= ?').get(
      bridge,
      l,
      h,
    ) as BridgeUsage;
    let messages = whole.messages - settled.messages;
    let bytes = whole.bytes - settled.bytes;
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

  /** The first and last seq of the bridge's log (the last of its last pack) and when its first message was created. */
  ends(bridge: string): LogEnds {
    const front = this.firstAfter(bridge, 0);
    if (front === undefined) return { first: null, last: null, oldestAt: null };
    return { first: front.seq, last: this.tail(bridge), oldestAt: front.at };
  }

  /** The bridge's first message after `seq`: its seq and when it was created; undefined when there is none. */
  firstAfter(bridge: string, seq: number): { readonly seq: number; readonly at: number } | undefined {
    // From the meta blobs: the health check asks for each sink every 2 s.
    for (const { seq: first, pack } of this.#messagesAfter(bridge, Math.max(seq, this.floor(bridge)))) return { seq: first, at: timeAt(pack.meta, first - pack.first) };
    return undefined;
  }

  /** The bridge's messages after `from` (at or above its floor), settled ones left out, in order: each seq with its pack's span and meta blob. */
  *#messagesAfter(bridge: string, from: number): Generator<{ readonly seq: number; readonly pack: WithMeta }> {
    for (const pack of this.#statement('SELECT first, last, meta FROM packs WHERE bridge = ? AND last > ? ORDER BY last').iterate(bridge, from) as IterableIterator<WithMeta>) {
      const settled = this.#settledIn(bridge, from, pack.last);
      for (let seq = Math.max(pack.first, from + 1); seq <= pack.last; seq++) if (settled?.has(seq) !== true) yield { seq, pack };
    }
  }

  /** The highest seq of the bridge's log, or 0. */
  tail(bridge: string): number {
    return (this.#statement('SELECT max(last) FROM packs WHERE bridge = ?').pluck().get(bridge) as number | null) ?? 0;
  }

  /** The seq of the bridge's `n`th message from the front, not above `through`: the end of the `n` oldest (its floor when the log is empty). */
  nth(bridge: string, n: number, through = TOP): number {
    const floor = this.floor(bridge);
    if (n <= 0) return floor;
    let end = floor;
    let left = n;
    for (const span of this.#statement('SELECT first, last FROM packs WHERE bridge = ? AND last > ? ORDER BY last').iterate(bridge, floor) as IterableIterator<Span>) {
      const start = Math.max(span.first, floor + 1);
      if (start > through) break;
      const stop = Math.min(span.last, through);
      const settled = this.#settledIn(bridge, start - 1, stop);
      const size = stop - start + 1 - (settled?.size ?? 0);
      if (size >= left) {
        for (let seq = start; ; seq++) if (settled?.has(seq) !== true && --left === 0) return seq;
      }
      left -= size;
      end = stop;
    }
    return end;
  }

  /**
   * The seq through which the bridge's oldest messages hold at least `messages` messages and
   * `bytes` bytes of payload (all of them when they hold less; its floor when none is needed).
   */
  throughFreeing(bridge: string, messages: number, bytes: number): number {
    if (bytes <= 0) return this.nth(bridge, messages);
    let through = this.floor(bridge);
    let freedMessages = 0;
    let freedBytes = 0;
    for (const { seq, pack } of this.#messagesAfter(bridge, through)) {
      if (freedMessages >= messages && freedBytes >= bytes) break;
      const at = seq - pack.first;
      freedMessages += 1;
      freedBytes += payloadBytes(pack.meta, at, at + 1);
      through = seq;
    }
    return through;
  }

  /**
   * The seq through which the bridge's log, from its front, holds messages created before
   * `before` (ms) and not before `since`, `limit` of them at most (-1: no limit); its floor when
   * the first is not.
   */
  createdBeforeThrough(bridge: string, before: number, limit: number, since = Number.NEGATIVE_INFINITY): number {
    const floor = this.floor(bridge);
    let through = floor;
    let left = limit < 0 ? Number.POSITIVE_INFINITY : limit;
    for (const { seq, pack } of this.#messagesAfter(bridge, floor)) {
      const at = timeAt(pack.meta, seq - pack.first);
      if (left <= 0 || at >= before || at < since) break;
      through = seq;
      left -= 1;
    }
    return through;
  }

  /** Deletes the bridge's messages `lo < seq <= hi`. */
  delete(bridge: string, lo: number, hi: number): void {
    const floor = this.floor(bridge);
    const span = this.#spanAfter(bridge, floor);
    if (span === undefined) return;
    const front = Math.max(span.first, floor + 1);
    if (hi < front) return;
    if (lo < front) this.#dropThrough(bridge, hi);
    else this.#settle(bridge, lo, hi);
  }

  /** From the front: the packs wholly at or below `through` go, and the floor moves into the one that holds it. */
  #dropThrough(bridge: string, through: number): void {
    this.#statement('DELETE FROM packs WHERE bridge = ? AND last <= ?').run(bridge, through);
    this.#statement('DELETE FROM settled WHERE bridge = ? AND seq <= ?').run(bridge, through);
    const next = this.#spanAfter(bridge, through);
    if (next !== undefined && next.first <= through) {
      this.#statement('INSERT INTO floors (bridge, seq) VALUES (?, ?) ON CONFLICT (bridge) DO UPDATE SET seq = max(seq, excluded.seq)').run(bridge, through);
    }
  }

  /**
   * From the middle, `lo` at or above the front: each message in the range is recorded as
   * settled (its pack is left as it is: writing it again for each few messages a handler settles
   * ahead of its cursor would write a pack many times over).
   */
  #settle(bridge: string, lo: number, hi: number): void {
    const insert = this.#statement('INSERT OR IGNORE INTO settled (bridge, seq, bytes) VALUES (?, ?, ?)');
    // A pack spans PACK_MESSAGES seqs at most: the index is read from lo to that far past hi.
    const packs = this.#statement('SELECT first, last, meta FROM packs WHERE bridge = ? AND last > ? AND last < ? AND first <= ? ORDER BY last').all(
      bridge,
      lo,
      hi + PACK_MESSAGES,
      hi,
    ) as WithMeta[];
    for (const pack of packs) {
      for (let seq = Math.max(pack.first, lo + 1); seq <= Math.min(pack.last, hi); seq++) insert.run(bridge, seq, payloadBytes(pack.meta, seq - pack.first, seq + 1 - pack.first));
    }
  }

  /** The bridge's settled messages `lo < seq <= hi` (see #settle), undefined when there are none. */
  #settledIn(bridge: string, lo: number, hi: number): Set<number> | undefined {
    const seqs = this.#statement('SELECT seq FROM settled WHERE bridge = ? AND seq > ? AND seq <= ?').pluck().all(bridge, lo, hi) as number[];
    return seqs.length === 0 ? undefined : new Set(seqs);
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
      const from = Math.max(0, (floors.get(pack.bridge) ?? 0) + 1 - pack.first);
      decode(out, pack.bridge, pack.first, pack.meta, pack.body, from, countOf(pack.meta), this.#settledIn(pack.bridge, pack.first + from - 1, pack.last));
      yield* out;
    }
  }
}
