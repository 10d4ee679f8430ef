import type Database from 'better-sqlite3';
import type { Envelope } from '../core/envelope.ts';
import { PackWriter } from './packs.ts';

/**
 * A message to append to a bridge's log, or, with `deadLetter`, straight to its dead letters
 * (a message refused at ingress: it never enters the log and gets seq 0 there).
 */
export interface AppendEntry {
  readonly bridge: string;
  readonly envelope: Envelope;
  readonly deadLetter?: { readonly sink: string; readonly reason: string };
}

type DeadLetterAt = (bridge: string, refused: NonNullable<AppendEntry['deadLetter']>, envelope: Envelope) => void;

export const INSERT_PACK = 'INSERT INTO packs (last, bridge, first, bytes, meta, body) VALUES (?, ?, ?, ?, ?, ?)';

/**
 * Writes a group commit's messages into the log, inside the caller's transaction: each bridge's
 * messages of the commit as one pack (packs.ts), or a few when they are many, with consecutive
 * seqs. Seqs follow the commit's order within a bridge; the bridges of a commit take theirs one
 * after the other.
 */
export class LogPacks {
  readonly #insert: Database.Statement;
  readonly #lastSeq: Database.Statement;
  readonly #pack = new PackWriter();
  /** Records a message refused at ingress in the bridge's dead letters (seq 0). */
  readonly #deadLetter: DeadLetterAt;

  constructor(db: Database.Database, deadLetter: DeadLetterAt) {
    this.#deadLetter = deadLetter;
    this.#insert = db.prepare(INSERT_PACK);
    this.#lastSeq = db.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'packs'").pluck();
  }

  /** The highest seq given out so far, or 0 (kept by AUTOINCREMENT, even once its message is gone). */
  lastSeq(): number {
    return (this.#lastSeq.get() as number | undefined) ?? 0;
  }

  /** Inserts the entries; returns their seqs (0 for dead letters). */
  insert(entries: readonly AppendEntry[]): number[] {
    const seqs = new Array<number>(entries.length).fill(0);
    let next = this.lastSeq() + 1;
    // Most commits carry one bridge's messages: the others are gathered only when one is met.
    let first: string | undefined;
    let others: Map<string, number[]> | undefined;
    for (let i = 0; i < entries.length; i++) {
      const { bridge, deadLetter, envelope } = entries[i] as AppendEntry;
      if (deadLetter !== undefined) this.#deadLetter(bridge, deadLetter, envelope);
      else if (first === undefined) first = bridge;
      else if (bridge !== first) {
        others ??= new Map();
        const at = others.get(bridge);
        if (at === undefined) others.set(bridge, [i]);
        else at.push(i);
      }
    }
    if (first === undefined) return seqs;
    try {
      next = this.#write(entries, first, undefined, next, seqs);
      if (others !== undefined) for (const [bridge, at] of others) next = this.#write(entries, bridge, at, next, seqs);
    } finally {
      this.#pack.reset();
    }
    return seqs;
  }

  /** Writes the bridge's entries (those at `at`, or every entry of the bridge) from seq `next`; returns the seq after them. */
  #write(entries: readonly AppendEntry[], bridge: string, at: readonly number[] | undefined, next: number, seqs: number[]): number {
    const pack = this.#pack;
    let first = next;
    const count = at === undefined ? entries.length : at.length;
    for (let k = 0; k < count; k++) {
      const i = at === undefined ? k : (at[k] as number);
      const entry = entries[i] as AppendEntry;
      if (entry.bridge !== bridge || entry.deadLetter !== undefined) continue;
      pack.add(entry.envelope);
      seqs[i] = next;
      next += 1;
      if (pack.full) {
        this.#insert.run(next - 1, bridge, first, pack.bytes, pack.meta(), pack.body());
        pack.reset();
        first = next;
      }
    }
    if (pack.count > 0) this.#insert.run(next - 1, bridge, first, pack.bytes, pack.meta(), pack.body());
    pack.reset();
    return next;
  }
}
