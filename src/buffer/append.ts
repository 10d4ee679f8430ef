import type Database from 'better-sqlite3';
import { type Envelope, NO_HEADERS } from '../core/envelope.ts';
import { INSERT_ROWS, valuesList } from '../sqlite/connection.ts';

/**
 * A message to append to a bridge's log, or, with `deadLetter`, straight to its dead letters
 * (a message refused at ingress: it never enters the log and gets seq 0 there).
 */
export interface AppendEntry {
  readonly bridge: string;
  readonly envelope: Envelope;
  readonly deadLetter?: { readonly sink: string; readonly reason: string };
}

export const headersJson = (e: Envelope): string => (noHeaders(e) ? '{}' : JSON.stringify(e.headers));

const noHeaders = (e: Envelope): boolean => e.headers === NO_HEADERS || isEmpty(e.headers);

/** Whether an object has no enumerable property, without the array Object.keys makes. */
function isEmpty(object: object): boolean {
  for (const _ in object) return false;
  return true;
}

/** Origins are shared between a device's messages (see the MQTT broker): their JSON is kept. */
const originJsons = new WeakMap<object, string>();
export function originJson(origin: Envelope['origin']): string {
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

/** Whether the INSERT_ROWS entries from `from` are messages to the log of one bridge, none with a key or headers. */
function plainRun(entries: readonly AppendEntry[], from: number): boolean {
  const { bridge } = entries[from] as AppendEntry;
  for (let j = from; j < from + INSERT_ROWS; j++) {
    const { bridge: other, envelope, deadLetter } = entries[j] as AppendEntry;
    if (other !== bridge || deadLetter !== undefined || envelope.key !== undefined || !noHeaders(envelope)) return false;
  }
  return true;
}

/** Bridge names that may go into a statement's text as they are (a gateway's bridges are named so). */
const PLAIN_NAME = /^[A-Za-z0-9._-]{1,200}$/;
/** Bridges with a statement of their own, at most (a library may append under any number of names). */
const PLAIN_BRIDGES = 64;
type DeadLetterAt = (bridge: string, refused: NonNullable<AppendEntry['deadLetter']>, envelope: Envelope) => void;
const COLUMNS = 'INSERT INTO messages (bridge, id, topic, key, headers, origin, payload, created_at) VALUES';

/**
 * Writes a group commit's rows into the log, inside the caller's transaction: INSERT_ROWS rows
 * per statement where it can, one by one where not.
 *
 * Most messages have no key and no headers, and a run of them is mostly one bridge's: such a
 * run goes through a statement of that bridge with the bridge, the key and the headers in its
 * text, five parameters a row instead of eight. Binding a parameter is a good part of what a
 * row costs: 1.57-1.63 against 1.98-2.08 µs of CPU per row in a script over better-sqlite3
 * (rows of the buffer's shape, 200-byte payloads).
 */
export class LogRows {
  readonly #db: Database.Database;
  readonly #one: Database.Statement;
  readonly #many: Database.Statement;
  readonly #plain = new Map<string, Database.Statement | undefined>();
  readonly #params = new Array<unknown>(INSERT_ROWS * 8);
  readonly #plainParams = new Array<unknown>(INSERT_ROWS * 5);
  /** Records a message refused at ingress in the bridge's dead letters (seq 0). */
  readonly #deadLetter: DeadLetterAt;

  constructor(db: Database.Database, deadLetter: DeadLetterAt) {
    this.#db = db;
    this.#deadLetter = deadLetter;
    this.#one = db.prepare(`${COLUMNS} (?, ?, ?, ?, ?, ?, ?, ?)`);
    this.#many = db.prepare(`${COLUMNS} ${valuesList(INSERT_ROWS, 8)}`);
  }

  /** Inserts the entries in order; returns their seqs (0 for dead letters). */
  insert(entries: readonly AppendEntry[]): number[] {
    const seqs = new Array<number>(entries.length);
    for (let i = 0; i < entries.length; ) {
      const entry = entries[i] as AppendEntry;
      if (entry.deadLetter !== undefined) {
        this.#deadLetter(entry.bridge, entry.deadLetter, entry.envelope);
        seqs[i] = 0;
        i += 1;
        continue;
      }
      if (i + INSERT_ROWS <= entries.length) {
        const plain = plainRun(entries, i) ? this.#plainStatement(entry.bridge) : undefined;
        if (plain !== undefined || fullRun(entries, i)) {
          // One statement for INSERT_ROWS rows: their seqs are consecutive, ending at the last.
          const last = plain === undefined ? this.#insertMany(entries, i) : this.#insertPlain(plain, entries, i);
          for (let j = 0; j < INSERT_ROWS; j++) seqs[i + j] = last - INSERT_ROWS + 1 + j;
          i += INSERT_ROWS;
          continue;
        }
      }
      const e = entry.envelope;
      seqs[i] = Number(this.#one.run(entry.bridge, e.id, e.topic, e.key ?? null, headersJson(e), originJson(e.origin), e.payload, e.timestamp).lastInsertRowid);
      i += 1;
    }
    return seqs;
  }

  #insertMany(entries: readonly AppendEntry[], from: number): number {
    const params = this.#params;
    for (let j = 0; j < INSERT_ROWS; j++) {
      const entry = entries[from + j] as AppendEntry;
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
    const last = Number(this.#many.run(params).lastInsertRowid);
    params.fill(undefined);
    return last;
  }

  #insertPlain(statement: Database.Statement, entries: readonly AppendEntry[], from: number): number {
    const params = this.#plainParams;
    for (let j = 0; j < INSERT_ROWS; j++) {
      const m = (entries[from + j] as AppendEntry).envelope;
      const k = j * 5;
      params[k] = m.id;
      params[k + 1] = m.topic;
      params[k + 2] = originJson(m.origin);
      params[k + 3] = m.payload;
      params[k + 4] = m.timestamp;
    }
    const last = Number(statement.run(params).lastInsertRowid);
    params.fill(undefined);
    return last;
  }

  /** `bridge`'s statement of plain rows, made at its first use; undefined for a name that cannot go into a statement's text, or past PLAIN_BRIDGES. */
  #plainStatement(bridge: string): Database.Statement | undefined {
    if (this.#plain.has(bridge)) return this.#plain.get(bridge);
    if (this.#plain.size >= PLAIN_BRIDGES) return undefined;
    const row = `('${bridge}', ?, ?, NULL, '{}', ?, ?, ?)`;
    const statement = PLAIN_NAME.test(bridge) ? this.#db.prepare(`${COLUMNS} ${new Array<string>(INSERT_ROWS).fill(row).join(', ')}`) : undefined;
    this.#plain.set(bridge, statement);
    return statement;
  }
}
