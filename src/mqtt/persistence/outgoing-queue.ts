import { Readable } from 'node:stream';
import type Database from 'better-sqlite3';
import type { GroupCommit } from './group-commit.ts';
import { normalizedPacket } from './memory-parts.ts';
import { type StoredPacket, decodePacket, encodePacket } from './packet-codec.ts';

/** Rows read per query while a client's queue is streamed. */
const PAGE = 64;
/** Expired messages removed per sweep. */
const EXPIRE_BATCH = 1000;

/**
 * The limits on the queue of a session whose client is offline (a connected client's messages
 * in flight are bounded by its connection). A message past one is not queued for that client.
 */
export interface QueueCap {
  readonly queuedPerSession: number;
  readonly queuedBytesPerSession: number;
  connected(clientId: string): boolean;
  /** Called, inside the write, for each client a message was not queued for. */
  refused(clientId: string, limit: 'queuedPerSession' | 'queuedBytesPerSession'): void;
}

interface QueueRow {
  readonly seq: number;
  readonly message_id: number | null;
  readonly payload: Buffer | string | null;
  readonly meta: string;
}

/**
 * The QoS 1 and 2 messages of persistent sessions, on disk in the order they were queued, with
 * the semantics of aedes-persistence's in-memory queues (asyncPersistence.js). Nothing of a
 * queue is held in memory: a reconnecting client's queue is read a page at a time.
 */
export class OutgoingQueue {
  readonly #commit: GroupCommit;
  readonly #insert: Database.Statement;
  readonly #byCounter: Database.Statement;
  readonly #byMessageId: Database.Statement;
  readonly #setMessageId: Database.Statement;
  readonly #replace: Database.Statement;
  readonly #takeByMessageId: Database.Statement;
  readonly #deleteSeq: Database.Statement;
  readonly #deleteClient: Database.Statement;
  readonly #last: Database.Statement;
  readonly #page: Database.Statement;
  readonly #expired: Database.Statement;
  readonly #usage: Database.Statement;

  constructor(db: Database.Database, commit: GroupCommit) {
    this.#commit = commit;
    this.#usage = db.prepare('SELECT messages, bytes FROM queue_usage WHERE client_id = ?');
    this.#insert = db.prepare('INSERT INTO outgoing (client_id, broker_id, broker_counter, message_id, expires_at, payload, meta) VALUES (?, ?, ?, ?, ?, ?, ?)');
    this.#byCounter = db.prepare('SELECT seq FROM outgoing WHERE client_id = ? AND broker_counter IS ? AND broker_id IS ? ORDER BY seq LIMIT 1');
    this.#byMessageId = db.prepare('SELECT seq FROM outgoing WHERE client_id = ? AND message_id = ? AND broker_id IS NOT ? ORDER BY seq LIMIT 1');
    this.#setMessageId = db.prepare('UPDATE outgoing SET message_id = ? WHERE seq = ?');
    this.#replace = db.prepare('UPDATE outgoing SET broker_id = ?, broker_counter = ?, message_id = ?, expires_at = ?, payload = ?, meta = ? WHERE seq = ?');
    this.#takeByMessageId = db.prepare('SELECT seq, message_id, payload, meta FROM outgoing WHERE client_id = ? AND message_id = ? ORDER BY seq LIMIT 1');
    this.#deleteSeq = db.prepare('DELETE FROM outgoing WHERE seq = ?');
    this.#deleteClient = db.prepare('DELETE FROM outgoing WHERE client_id = ?');
    this.#last = db.prepare('SELECT max(seq) AS seq FROM outgoing WHERE client_id = ?');
    this.#page = db.prepare('SELECT seq, message_id, payload, meta FROM outgoing WHERE client_id = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?');
    this.#expired = db.prepare('SELECT seq, client_id FROM outgoing WHERE expires_at <= ? AND message_id IS NULL ORDER BY expires_at LIMIT ?');
  }

  /**
   * Queues a copy of `packet` for each client; resolves once on disk (the publisher's PUBACK
   * waits for it). A client matched by several of its subscriptions gets one copy: aedes numbers
   * a copy by the message's broker counter, so a second one would never be cleared by a PUBACK.
   */
  enqueue(clientIds: readonly string[], packet: StoredPacket, cap?: QueueCap): Promise<void> {
    if (clientIds.length === 0) return Promise.resolve();
    const queued = normalizedPacket(packet);
    const { payload, meta } = encodePacket(queued);
    const brokerId = queued.brokerId ?? null;
    const counter = queued.brokerCounter ?? null;
    const messageId = queued.messageId ?? null;
    const expiresAt = queued.messageExpiry ?? null;
    const bytes = payload === null ? 0 : Buffer.byteLength(payload);
    return this.#commit.durable(() => {
      for (const clientId of new Set(clientIds)) {
        const full = cap === undefined ? undefined : this.#full(clientId, bytes, cap);
        if (full !== undefined) cap?.refused(clientId, full);
        else this.#insert.run(clientId, brokerId, counter, messageId, expiresAt, payload, meta);
      }
    });
  }

  /** The limit a message of `bytes` would take the offline client's queue past, if any. */
  #full(clientId: string, bytes: number, cap: QueueCap): 'queuedPerSession' | 'queuedBytesPerSession' | undefined {
    if (cap.connected(clientId)) return undefined;
    const usage = (this.#usage.get(clientId) as { messages: number; bytes: number } | undefined) ?? { messages: 0, bytes: 0 };
    if (usage.messages + 1 > cap.queuedPerSession) return 'queuedPerSession';
    if (usage.bytes + bytes > cap.queuedBytesPerSession) return 'queuedBytesPerSession';
    return undefined;
  }

  /**
   * The copy of `packet` in the client's queue gets its packet id (same broker and counter), or
   * is replaced by `packet` (a PUBREL, or a copy numbered by another broker, under the same
   * packet id); the first queued copy matching either way is the one changed. Throws "no such
   * packet" when none matches. A QoS 2 step resolves once on disk (its packet id must not change
   * across a crash, or the device would take the message twice); a QoS 1 one at once: a copy
   * sent again after a crash with another id is a duplicate QoS 1 allows.
   */
  update(clientId: string, packet: StoredPacket): Promise<void> {
    const write = () => {
      const sameCopy = this.#byCounter.get(clientId, packet.brokerCounter ?? null, packet.brokerId ?? null) as { seq: number } | undefined;
      const sameId = packet.messageId === undefined ? undefined : (this.#byMessageId.get(clientId, packet.messageId, packet.brokerId ?? null) as { seq: number } | undefined);
      if (sameCopy !== undefined && (sameId === undefined || sameCopy.seq < sameId.seq)) {
        this.#setMessageId.run(packet.messageId ?? null, sameCopy.seq);
      } else if (sameId !== undefined) {
        const { payload, meta } = encodePacket(packet);
        this.#replace.run(packet.brokerId ?? null, packet.brokerCounter ?? null, packet.messageId ?? null, packet.messageExpiry ?? null, payload, meta, sameId.seq);
      } else {
        throw new Error('no such packet');
      }
    };
    if (packet.cmd === 'pubrel' || packet.qos === 2) return this.#commit.durable(write);
    try {
      this.#commit.eager(write);
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
  }

  /**
   * Removes and returns the first queued copy with this packet id (its PUBACK or PUBCOMP came);
   * undefined when there is none. Not waited for: a removal lost to a crash sends the message
   * again, as QoS 1 and 2 allow.
   */
  clear(clientId: string, messageId: number | undefined): StoredPacket | undefined {
    if (messageId === undefined || messageId === null) return undefined;
    const row = this.#takeByMessageId.get(clientId, messageId) as QueueRow | undefined;
    if (row === undefined) return undefined;
    this.#commit.eager(() => this.#deleteSeq.run(row.seq));
    return decodeRow(row);
  }

  /** The client's queue as it is now (messages queued later are not included), a page at a time. */
  stream(clientId: string): Readable {
    const last = (this.#last.get(clientId) as { seq: number | null }).seq ?? 0;
    const page = this.#page;
    function* rows(): Generator<StoredPacket> {
      let after = 0;
      for (;;) {
        const found = page.all(clientId, after, last, PAGE) as QueueRow[];
        for (const row of found) yield decodeRow(row);
        if (found.length < PAGE) return;
        after = (found[found.length - 1] as QueueRow).seq;
      }
    }
    return Readable.from(rows());
  }

  /** Empties the client's queue (its session ended). Applied in the current transaction. */
  dropClient(clientId: string): void {
    this.#deleteClient.run(clientId);
  }

  /**
   * Removes messages past their MQTT 5 Message Expiry Interval that were never sent, from the
   * queues of clients that are not connected (a connected client's queue may be being sent);
   * returns how many.
   */
  expire(now: number, connected: (clientId: string) => boolean): number {
    const rows = (this.#expired.all(now, EXPIRE_BATCH) as { seq: number; client_id: string }[]).filter((r) => !connected(r.client_id));
    if (rows.length === 0) return 0;
    this.#commit.eager(() => {
      for (const row of rows) this.#deleteSeq.run(row.seq);
    });
    return rows.length;
  }
}

function decodeRow(row: QueueRow): StoredPacket {
  const packet = decodePacket(row.payload, row.meta);
  if (row.message_id !== null || 'messageId' in packet) packet.messageId = row.message_id ?? undefined;
  return packet;
}
