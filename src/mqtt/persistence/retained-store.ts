import { Readable } from 'node:stream';
import type Database from 'better-sqlite3';
import { asError } from '../../core/errors.ts';
import { topicMatches } from '../../core/topic.ts';
import type { GroupCommit } from './group-commit.ts';
import { type StoredPacket, decodePacket, encodePacket } from './packet-codec.ts';
import { steadyNow } from '../../core/steady-clock.ts';

/** Rows read per query while a stream of retained messages is consumed. */
const PAGE = 128;

/** Compares above every TEXT value in SQLite (a BLOB sorts after all text): "no upper bound". */
const ABOVE_ALL_TEXT = Buffer.from([0xff]);

/** The limits on retained messages (`mqtt.limits`). */
export interface RetainedLimits {
  readonly retainedPerClient: number;
  readonly retainedBytesPerClient: number;
  readonly retainedMessages: number;
  readonly retainedBytes: number;
}

interface Usage {
  readonly messages: number;
  readonly bytes: number;
}

interface RetainedRow {
  readonly topic: string;
  readonly payload: Buffer | string | null;
  readonly meta: string;
}

/**
 * Retained messages, on disk only: a SUBSCRIBE reads the ones its filters match from an index
 * range (the filter's levels before its first wildcard), so nothing is loaded at startup.
 */
export class RetainedStore {
  readonly #commit: GroupCommit;
  readonly #upsert: Database.Statement;
  readonly #delete: Database.Statement;
  readonly #first: Database.Statement;
  readonly #next: Database.Statement;
  readonly #expired: Database.Statement;
  readonly #stored: Database.Statement;
  readonly #usage: Database.Statement;
  readonly #total: Database.Statement;

  constructor(db: Database.Database, commit: GroupCommit) {
    this.#commit = commit;
    this.#upsert = db.prepare(
      `INSERT INTO retained (topic, payload, meta, expires_at, owner) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (topic) DO UPDATE SET payload = excluded.payload, meta = excluded.meta, expires_at = excluded.expires_at, owner = excluded.owner`,
    );
    this.#stored = db.prepare('SELECT owner, octet_length(payload) AS bytes FROM retained WHERE topic = ?');
    this.#usage = db.prepare('SELECT messages, bytes FROM retained_usage WHERE owner = ?');
    this.#total = db.prepare('SELECT messages, bytes FROM retained_total');
    this.#delete = db.prepare('DELETE FROM retained WHERE topic = ?');
    this.#first = db.prepare('SELECT topic, payload, meta FROM retained WHERE topic >= ? AND topic < ? ORDER BY topic LIMIT ?');
    this.#next = db.prepare('SELECT topic, payload, meta FROM retained WHERE topic > ? AND topic < ? ORDER BY topic LIMIT ?');
    this.#expired = db.prepare('DELETE FROM retained WHERE expires_at <= ?');
  }

  /**
   * Keeps the message as its topic's retained one, or removes that when the payload is empty.
   * `owner`: the client id it counts against (none for the gateway's own). A QoS 0 message's
   * change resolves once on disk. A QoS 1 or 2 message's resolves at once: aedes queues the
   * message for persistent sessions next, and its PUBACK (PUBREC) waits for that commit, which
   * holds this change too (GroupCommit.joined), so that a crash keeps both or neither.
   */
  store(packet: StoredPacket, owner: string | null = null): Promise<void> {
    const write = this.#change(packet, owner);
    if ((packet.qos ?? 0) === 0) return this.#commit.durable(write);
    try {
      this.#commit.joined(write);
    } catch (error) {
      return Promise.reject(asError(error));
    }
    return Promise.resolve();
  }

  /** The write that makes `packet` its topic's retained message, or removes that one (an empty payload). */
  #change(packet: StoredPacket, owner: string | null): () => void {
    const topic = packet.topic ?? '';
    const payload = packet.payload as { length?: number } | undefined;
    if (payload === undefined || payload.length === 0) {
      return () => {
        this.#delete.run(topic);
      };
    }
    const { payload: bytes, meta } = encodePacket(packet);
    return () => {
      this.#upsert.run(topic, bytes, meta, packet.messageExpiry ?? null, owner);
    };
  }

  /**
   * What storing `bytes` of payload as the retained message of `topic` for `owner` would make
   * of the client's and the gateway's usage, as they are now (a replaced message no longer
   * counts): the first limit it would take past its value, if any. A usage already past a limit
   * (it was lowered) may shrink.
   */
  wouldExceed(owner: string, topic: string, bytes: number, limits: RetainedLimits): keyof RetainedLimits | undefined {
    const old = this.#stored.get(topic) as { owner: string | null; bytes: number | null } | undefined;
    const oldBytes = old?.bytes ?? 0;
    const mine = (this.#usage.get(owner) as Usage | undefined) ?? { messages: 0, bytes: 0 };
    const total = (this.#total.get() as Usage | undefined) ?? { messages: 0, bytes: 0 };
    const replacesOwn = old !== undefined && old.owner === owner;
    const after = {
      retainedPerClient: [mine.messages, mine.messages + (replacesOwn ? 0 : 1)],
      retainedBytesPerClient: [mine.bytes, mine.bytes + bytes - (replacesOwn ? oldBytes : 0)],
      retainedMessages: [total.messages, total.messages + (old === undefined ? 1 : 0)],
      retainedBytes: [total.bytes, total.bytes + bytes - oldBytes],
    } as const;
    for (const limit of ['retainedPerClient', 'retainedBytesPerClient', 'retainedMessages', 'retainedBytes'] as const) {
      const [now, then] = after[limit];
      if (then > limits[limit] && then > now) return limit;
    }
    return undefined;
  }

  /** The retained messages matching any of the filters, each once, read a page at a time. */
  stream(filters: readonly string[]): Readable {
    return Readable.from(this.#matching(filters));
  }

  /** Deletes retained messages past their MQTT 5 Message Expiry Interval (by the clock aedes stamps it with); returns how many. */
  expire(now = steadyNow()): number {
    return this.#commit.eager(() => this.#expired.run(now).changes);
  }

  *#matching(filters: readonly string[]): Generator<StoredPacket> {
    const seen = filters.length > 1 ? new Set<string>() : undefined;
    for (const filter of filters) {
      const [from, below] = candidateRange(filter);
      let rows = this.#first.all(from, below, PAGE) as RetainedRow[];
      while (rows.length > 0) {
        for (const row of rows) {
          if (!topicMatches(filter, row.topic) || seen?.has(row.topic)) continue;
          seen?.add(row.topic);
          yield decodePacket(row.payload, row.meta);
        }
        if (rows.length < PAGE) break;
        rows = this.#next.all((rows[rows.length - 1] as RetainedRow).topic, below, PAGE) as RetainedRow[];
      }
    }
  }
}

/**
 * The topics a filter can match lie in [from, below): the filter's levels before its first
 * wildcard, and every topic extending them by '/' ('0' is the character after '/'). A filter
 * that starts with a wildcard reads every topic.
 */
export function candidateRange(filter: string): [string, string | Buffer] {
  const levels = filter.split('/');
  const wildcard = levels.findIndex((level) => level === '+' || level === '#');
  if (wildcard === -1) return [filter, `${filter}\u0000`];
  if (wildcard === 0) return ['', ABOVE_ALL_TEXT];
  const prefix = levels.slice(0, wildcard).join('/');
  return [prefix, `${prefix}0`];
}
