import { Readable } from 'node:stream';
import type Database from 'better-sqlite3';
import type { CommandMemory } from './command-memory.ts';
import type { GroupCommit } from './group-commit.ts';
import { normalizedPacket } from './memory-parts.ts';
import { type StoredPacket, decodePacket, encodePacket } from './packet-codec.ts';
import { steadyNow } from '../../core/steady-clock.ts';

/** Rows read per query while a client's queue is streamed. */
const PAGE = 64;
/** Expired messages removed per sweep. */
const EXPIRE_BATCH = 1000;
/** How long the answer to a command without an expiry is kept (a command has one: see CommandTracker). */
const ANSWER_KEPT_MS = 3_600_000;

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
  readonly bytes: number;
  readonly payload: Buffer | string | null;
  readonly meta: string;
}

/** A copy a PUBACK takes: also the command it is, if any. */
interface TakenRow extends QueueRow {
  readonly command_key: string | null;
  readonly expires_at: number | null;
}

interface Usage {
  messages: number;
  bytes: number;
}

/** A copy's packet: its own once replaced, else the queued message's. */
const PACKET = 'CASE WHEN q.meta IS NULL THEN m.payload ELSE q.payload END AS payload, coalesce(q.meta, m.meta) AS meta';

/**
 * The QoS 1 and 2 messages of persistent sessions, on disk in the order they were queued, with
 * the semantics of aedes-persistence's in-memory queues (asyncPersistence.js). A message is
 * stored once (queued_messages) and each session gets a small row pointing at it (queue): a
 * publish to many offline sessions writes one B-tree entry per session, not a copy of the
 * message with three index entries (which made such a publish 10 times slower than in memory).
 * Nothing of a queue is held in memory: a reconnecting client's queue is read a page at a time.
 * What an offline session's queue holds (for QueueCap) is counted from its rows the first time
 * it is needed and followed from then on.
 */
export class OutgoingQueue {
  readonly #commit: GroupCommit;
  readonly #commands: CommandMemory | undefined;
  readonly #insertMessage: Database.Statement;
  readonly #insertCopy: Database.Statement;
  readonly #byCounter: Database.Statement;
  readonly #byCounterReplaced: Database.Statement;
  readonly #sentUnder: Database.Statement;
  readonly #setMessageId: Database.Statement;
  readonly #replace: Database.Statement;
  readonly #takeByMessageId: Database.Statement;
  readonly #deleteCopy: Database.Statement;
  readonly #deleteClient: Database.Statement;
  readonly #last: Database.Statement;
  readonly #page: Database.Statement;
  readonly #expired: Database.Statement;
  readonly #count: Database.Statement;
  /** What the queues of offline sessions hold, for the clients QueueCap looked at. */
  readonly #usage = new Map<string, Usage>();

  /** `commands`: the message a command is gets its key (see command-memory.ts). */
  constructor(db: Database.Database, commit: GroupCommit, commands?: CommandMemory) {
    this.#commit = commit;
    this.#commands = commands;
    this.#insertMessage = db.prepare('INSERT INTO queued_messages (broker_id, broker_counter, copies, payload, meta) VALUES (?, ?, ?, ?, ?)');
    this.#insertCopy = db.prepare('INSERT INTO queue (client_id, seq, message_id, bytes, expires_at, command_key) VALUES (?, ?, ?, ?, ?, ?)');
    // A copy not replaced has the queued message's broker id and counter (its seq is the message's id).
    // Both lookups name their index: without statistics (no ANALYZE) SQLite walked the client's
    // queue by its key instead, a row per queued message for each message sent, and a resumed
    // queue of 10,000 messages was sent at about 1,500 a second (QoS 1, no fsync).
    this.#byCounter = db.prepare(
      'SELECT q.seq FROM queued_messages m INDEXED BY queued_messages_counter CROSS JOIN queue q ON q.client_id = ? AND q.seq = m.id WHERE m.broker_counter IS ? AND m.broker_id IS ? AND q.meta IS NULL ORDER BY q.seq LIMIT 1',
    );
    this.#byCounterReplaced = db.prepare(
      'SELECT seq FROM queue INDEXED BY queue_replaced WHERE client_id = ? AND meta IS NOT NULL AND own_broker_counter IS ? AND own_broker_id IS ? ORDER BY seq LIMIT 1',
    );
    this.#sentUnder = db.prepare('SELECT seq FROM queue WHERE client_id = ? AND message_id = ? ORDER BY seq LIMIT 1');
    this.#setMessageId = db.prepare('UPDATE queue SET message_id = ? WHERE client_id = ? AND seq = ?');
    this.#replace = db.prepare(
      'UPDATE queue SET own_broker_id = ?, own_broker_counter = ?, message_id = ?, expires_at = ?, bytes = ?, payload = ?, meta = ? WHERE client_id = ? AND seq = ?',
    );
    this.#takeByMessageId = db.prepare(
      `SELECT q.seq, q.message_id, q.bytes, q.expires_at, q.command_key, ${PACKET} FROM queue q JOIN queued_messages m ON m.id = q.seq WHERE q.client_id = ? AND q.message_id = ? ORDER BY q.seq LIMIT 1`,
    );
    this.#deleteCopy = db.prepare('DELETE FROM queue WHERE client_id = ? AND seq = ?');
    this.#deleteClient = db.prepare('DELETE FROM queue WHERE client_id = ?');
    this.#last = db.prepare('SELECT max(seq) AS seq FROM queue WHERE client_id = ?');
    this.#page = db.prepare(
      `SELECT q.seq, q.message_id, q.bytes, ${PACKET} FROM queue q JOIN queued_messages m ON m.id = q.seq WHERE q.client_id = ? AND q.seq > ? AND q.seq <= ? ORDER BY q.seq LIMIT ?`,
    );
    this.#expired = db.prepare('SELECT seq, client_id FROM queue WHERE expires_at <= ? AND message_id IS NULL ORDER BY expires_at LIMIT ?');
    this.#count = db.prepare('SELECT count(*) AS messages, coalesce(sum(bytes), 0) AS bytes FROM queue WHERE client_id = ?');
  }

  /**
   * Queues `packet` for each client; resolves once on disk (the publisher's PUBACK waits for
   * it), with what the same publish stored before it (its QoS 2 state, its retained message:
   * GroupCommit.joined), also when there is no client to queue it for. A client matched by
   * several of its subscriptions gets one copy: aedes numbers a copy by the message's broker
   * counter, so a second one would never be cleared by a PUBACK.
   */
  enqueue(clientIds: readonly string[], packet: StoredPacket, cap?: QueueCap): Promise<void> {
    if (clientIds.length === 0) return this.#commit.settled();
    const queued = normalizedPacket(packet);
    const { payload, meta } = encodePacket(queued);
    const messageId = queued.messageId ?? null;
    const expiresAt = queued.messageExpiry ?? null;
    const bytes = payload === null ? 0 : Buffer.byteLength(payload);
    const commandKey = this.#commands?.keyOf(queued.brokerId, queued.brokerCounter) ?? null;
    return this.#commit.durable(() => {
      const clients = [...new Set(clientIds)].filter((clientId) => {
        const full = cap === undefined ? undefined : this.#full(clientId, bytes, cap);
        if (full !== undefined) cap?.refused(clientId, full);
        return full === undefined;
      });
      if (clients.length === 0) return;
      const seq = this.#insertMessage.run(queued.brokerId ?? null, queued.brokerCounter ?? null, clients.length, payload, meta).lastInsertRowid;
      for (const clientId of clients) {
        this.#insertCopy.run(clientId, seq, messageId, bytes, expiresAt, commandKey);
        const usage = this.#usage.get(clientId);
        if (usage !== undefined) {
          usage.messages += 1;
          usage.bytes += bytes;
        }
      }
    });
  }

  /** The limit a message of `bytes` would take the offline client's queue past, if any. */
  #full(clientId: string, bytes: number, cap: QueueCap): 'queuedPerSession' | 'queuedBytesPerSession' | undefined {
    if (cap.connected(clientId)) {
      this.#usage.delete(clientId);
      return undefined;
    }
    let usage = this.#usage.get(clientId);
    if (usage === undefined) {
      usage = { ...(this.#count.get(clientId) as Usage) };
      this.#usage.set(clientId, usage);
    }
    if (usage.messages + 1 > cap.queuedPerSession) return 'queuedPerSession';
    if (usage.bytes + bytes > cap.queuedBytesPerSession) return 'queuedBytesPerSession';
    return undefined;
  }

  /** Forgets what the queues were counted to hold (another process changed them, or a transaction was lost). */
  recount(): void {
    this.#usage.clear();
  }

  /**
   * The copy of `packet` in the client's queue (same broker id and counter) gets its packet id;
   * a PUBREL replaces the copy sent under its packet id, and no other: matched by counter, it
   * would take an earlier PUBREL's copy, leaving its own message queued to be sent again after
   * its exchange completed. Throws "no such packet" when none matches. A copy of another broker
   * under the same packet id is left alone: aedes-persistence replaces it (a cluster's brokers
   * share a store), but this store is one gateway's, and another broker id is an earlier run of
   * it, whose copies are messages the session has not acknowledged. aedes numbered a new
   * connection's messages from a random packet id without skipping those in flight (the patch
   * skips them now; a broker.db from before may still hold such copies), so after a restart a new
   * message could get the id of an old one still in flight: replaced, the old one was lost. A
   * QoS 2 step resolves once on disk (its packet id must not change across a crash, or the
   * device would take the message twice); a QoS 1 one at once: a copy sent again after a crash
   * with another id is a duplicate QoS 1 allows.
   */
  update(clientId: string, packet: StoredPacket): Promise<void> {
    const write = () => {
      const counter = packet.brokerCounter ?? null;
      // aedes numbers a PUBREL it sends again on a resumed session as a new message: not its copy's counter.
      if (counter === null || packet.cmd === 'pubrel') {
        const sent = packet.messageId === undefined ? undefined : (this.#sentUnder.get(clientId, packet.messageId) as { seq: number } | undefined);
        if (sent === undefined) throw new Error('no such packet');
        this.#replaceCopy(clientId, sent.seq, packet);
        return;
      }
      const broker = packet.brokerId ?? null;
      const shared = this.#byCounter.get(clientId, counter, broker) as { seq: number } | undefined;
      const replaced = this.#byCounterReplaced.get(clientId, counter, broker) as { seq: number } | undefined;
      const sameCopy = shared === undefined ? replaced : replaced === undefined || shared.seq < replaced.seq ? shared : replaced;
      if (sameCopy === undefined) throw new Error('no such packet');
      this.#setMessageId.run(packet.messageId ?? null, clientId, sameCopy.seq);
    };
    if (packet.cmd === 'pubrel' || packet.qos === 2) return this.#commit.durable(write);
    try {
      this.#commit.eager(write);
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
  }

  #replaceCopy(clientId: string, seq: number, packet: StoredPacket): void {
    const { payload, meta } = encodePacket(packet);
    const bytes = payload === null ? 0 : Buffer.byteLength(payload);
    this.#replace.run(packet.brokerId ?? null, packet.brokerCounter ?? null, packet.messageId ?? null, packet.messageExpiry ?? null, bytes, payload, meta, clientId, seq);
    this.#usage.delete(clientId);
  }

  /**
   * Removes and returns the first queued copy with this packet id (its PUBACK or PUBCOMP came);
   * undefined when there is none. Not waited for: a removal lost to a crash sends the message
   * again, as QoS 1 and 2 allow. A command's copy leaves its answer (CommandMemory), so that the
   * command read again after a restart is not sent again.
   */
  clear(clientId: string, messageId: number | undefined): StoredPacket | undefined {
    if (messageId === undefined || messageId === null) return undefined;
    const row = this.#takeByMessageId.get(clientId, messageId) as TakenRow | undefined;
    if (row === undefined) return undefined;
    this.#commit.eager(() => {
      this.#deleteCopy.run(clientId, row.seq);
      if (row.command_key !== null) this.#commands?.answeredNow(row.command_key, clientId, row.expires_at ?? steadyNow() + ANSWER_KEPT_MS);
    });
    const usage = this.#usage.get(clientId);
    if (usage !== undefined) {
      usage.messages -= 1;
      usage.bytes -= row.bytes;
    }
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
    this.#usage.delete(clientId);
  }

  /**
   * Removes messages past their MQTT 5 Message Expiry Interval that were never sent, from the
   * queues of clients that are not connected (a connected client's queue may be being sent), by
   * the clock aedes stamps the expiry with; returns how many.
   */
  expire(connected: (clientId: string) => boolean, now = steadyNow()): number {
    const rows = (this.#expired.all(now, EXPIRE_BATCH) as { seq: number; client_id: string }[]).filter((r) => !connected(r.client_id));
    if (rows.length === 0) return 0;
    this.#commit.eager(() => {
      for (const row of rows) {
        this.#deleteCopy.run(row.client_id, row.seq);
        this.#usage.delete(row.client_id);
      }
    });
    return rows.length;
  }
}

function decodeRow(row: QueueRow): StoredPacket {
  const packet = decodePacket(row.payload, row.meta);
  if (row.message_id !== null || 'messageId' in packet) packet.messageId = row.message_id ?? undefined;
  return packet;
}
