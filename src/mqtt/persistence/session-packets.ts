import { Readable } from 'node:stream';
import type Database from 'better-sqlite3';
import { asError } from '../../core/errors.ts';
import type { GroupCommit } from './group-commit.ts';
import { type ClientRef, normalizedPacket } from './memory-parts.ts';
import type { WillOwner } from './carried-wills.ts';
import { type StoredPacket, decodePacket, encodePacket } from './packet-codec.ts';

interface PacketRow {
  readonly payload: Buffer | string | null;
  readonly meta: string;
}

/** Wills read per query while they are streamed. */
const PAGE = 100;

/**
 * The other packets a session keeps, one lookup each: QoS 2 messages received and answered
 * with PUBREC until their PUBREL, and each client's will.
 */
export class SessionPackets {
  readonly #commit: GroupCommit;
  readonly #statements: Record<
    'upsertIncoming' | 'getIncoming' | 'deleteIncoming' | 'clientHasIncoming' | 'deleteClientIncoming' | 'upsertWill' | 'getWill' | 'deleteWill' | 'willsPage',
    Database.Statement
  >;

  constructor(db: Database.Database, commit: GroupCommit) {
    this.#commit = commit;
    const s = (sql: string) => db.prepare(sql);
    this.#statements = {
      upsertIncoming: s('INSERT OR REPLACE INTO incoming (client_id, message_id, payload, meta) VALUES (?, ?, ?, ?)'),
      getIncoming: s('SELECT payload, meta FROM incoming WHERE client_id = ? AND message_id = ?'),
      deleteIncoming: s('DELETE FROM incoming WHERE client_id = ? AND message_id = ?'),
      clientHasIncoming: s('SELECT 1 FROM incoming WHERE client_id = ? LIMIT 1'),
      deleteClientIncoming: s('DELETE FROM incoming WHERE client_id = ?'),
      upsertWill: s('INSERT OR REPLACE INTO wills (client_id, broker_id, payload, meta, due_at, owner, profile, protocol) VALUES (?, ?, ?, ?, NULL, ?, ?, ?)'),
      getWill: s('SELECT payload, meta FROM wills WHERE client_id = ?'),
      deleteWill: s('DELETE FROM wills WHERE client_id = ?'),
      willsPage: s('SELECT client_id, broker_id, payload, meta FROM wills WHERE client_id > ? AND due_at IS NULL ORDER BY client_id LIMIT ?'),
    };
  }

  /**
   * Resolves at once, not when on disk: aedes publishes the message right after, and its PUBREC
   * waits for the commit of the copies queued for persistent sessions (OutgoingQueue.enqueue),
   * which holds this row too (GroupCommit.joined). A crash before that commit loses both, and the
   * device sends the message again; committed first on its own, the row made that resend a
   * duplicate, answered without publishing the message, which no session then got.
   */
  storeIncoming(client: ClientRef, packet: StoredPacket): Promise<void> {
    const stored = normalizedPacket(packet);
    stored.messageId = packet.messageId;
    const { payload, meta } = encodePacket(stored);
    try {
      this.#commit.joined(() => this.#statements.upsertIncoming.run(client.id, packet.messageId, payload, meta));
    } catch (error) {
      return Promise.reject(asError(error));
    }
    return Promise.resolve();
  }

  /** The stored QoS 2 message with this packet id; throws "no such packet" when there is none. */
  incoming(client: ClientRef, messageId: number | undefined): StoredPacket {
    const row = messageId === undefined ? undefined : (this.#statements.getIncoming.get(client.id, messageId) as PacketRow | undefined);
    if (row === undefined) throw new Error('no such packet');
    return decodePacket(row.payload, row.meta);
  }

  /** Rejects with "no such packet" when there is none. */
  deleteIncoming(client: ClientRef, messageId: number | undefined): Promise<void> {
    return this.#commit.durable(() => {
      if (messageId === undefined || this.#statements.deleteIncoming.run(client.id, messageId).changes === 0) throw new Error('no such packet');
    });
  }

  cleanIncoming(client: ClientRef): Promise<void> {
    if (this.#statements.clientHasIncoming.get(client.id) === undefined) return Promise.resolve();
    return this.#commit.durable(() => this.dropIncoming(client.id));
  }

  /** Inside the caller's transaction. */
  dropIncoming(clientId: string): void {
    this.#statements.deleteClientIncoming.run(clientId);
  }

  /**
   * Resolves once on disk: the CONNACK waits for it. `owner`: the login that stored it.
   * `alongside` is written in the same transaction (the session's record).
   */
  putWill(client: ClientRef, will: StoredPacket, owner: WillOwner, alongside?: () => void): Promise<void> {
    const { payload, meta } = encodePacket(will);
    return this.#commit.durable(() => {
      this.#statements.upsertWill.run(client.id, will.brokerId ?? '', payload, meta, owner.username, owner.profile, owner.protocol);
      alongside?.();
    });
  }

  will(client: ClientRef): StoredPacket | undefined {
    const row = this.#statements.getWill.get(client.id) as PacketRow | undefined;
    return row === undefined ? undefined : decodePacket(row.payload, row.meta);
  }

  /**
   * Removes the client's will; resolves with it once that is on disk (committed at the end of
   * the turn, not later: a will back after a crash would be published after the restart).
   * `alongside` is written in the same transaction (the session's record), waited for even when
   * there is no will to remove.
   */
  deleteWill(client: ClientRef, alongside?: () => void): Promise<StoredPacket | undefined> {
    const will = this.will(client);
    if (will === undefined && alongside === undefined) return Promise.resolve(undefined);
    return this.#commit.durable(() => {
      if (will !== undefined) this.#statements.deleteWill.run(client.id);
      alongside?.();
      return will;
    });
  }

  /** The wills of brokers not in `brokers`, but those carried over from an earlier run (SessionRecords publishes them). */
  streamWills(brokers: Readonly<Record<string, unknown>>): Readable {
    const page = this.#statements.willsPage;
    function* wills(): Generator<StoredPacket> {
      let after = '';
      for (;;) {
        const rows = page.all(after, PAGE) as (PacketRow & { client_id: string; broker_id: string })[];
        for (const row of rows) if (!brokers[row.broker_id]) yield decodePacket(row.payload, row.meta);
        if (rows.length < PAGE) return;
        after = (rows[rows.length - 1] as { client_id: string }).client_id;
      }
    }
    return Readable.from(wills());
  }
}
