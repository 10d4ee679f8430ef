import type { Readable } from 'node:stream';
import type { Aedes, AedesPublishPacket, Client } from 'aedes';
import type Database from 'better-sqlite3';
import type { Logger } from 'pino';
import type { Counters } from '../../core/component.ts';
import type { Synchronous } from '../../sqlite/connection.ts';
import { aedesInternals } from '../aedes-internals.ts';
import { GroupCommit } from './group-commit.ts';
import type { ClientRef, SubscriptionRecord, TopicSubscription } from './memory-parts.ts';
import { OutgoingQueue } from './outgoing-queue.ts';
import type { StoredPacket } from './packet-codec.ts';
import { RetainedStore } from './retained-store.ts';
import { BROKER_STATE_SCHEMA } from './schema.ts';
import { SessionPackets } from './session-packets.ts';
import { SessionRecords } from './session-records.ts';
import { SubscriptionStore } from './subscription-store.ts';

/** How often messages past their MQTT 5 Message Expiry Interval are removed from disk. */
const EXPIRY_SWEEP_MS = 60_000;

/** The broker as aedes hands it to `setup` (in aedes-persistence's own tests, a stand-in). */
interface PersistenceBroker {
  readonly id: string;
}

export interface SqlitePersistenceOptions {
  readonly logger: Logger;
  readonly counters: Counters;
  /**
   * Whether the client may publish its will. A will it may not is not stored: the store is read
   * only to publish the wills of an earlier run, which would be refused then too.
   */
  readonly willAllowed?: (client: Client, will: StoredPacket) => boolean;
}

/**
 * aedes' persistence on SQLite (broker.db beside the buffer): retained messages, the
 * subscriptions, queued messages, QoS 2 state and wills of persistent sessions, with the
 * behaviour of aedes-persistence's in-memory implementation (its conformance suite runs against
 * this class), so that they survive a restart or a crash. Writes are group-committed per
 * event-loop turn (group-commit.ts); a promise that aedes waits for before it answers a client
 * (SUBACK, PUBACK, PUBREC, CONNACK) resolves after the commit.
 *
 * Held in memory: the subscriptions (the index every publish is matched against, loaded at
 * startup). Read from disk when needed: retained messages, queues, QoS 2 state, wills.
 */
export class SqlitePersistence {
  readonly #db: Database.Database;
  readonly #options: SqlitePersistenceOptions;
  readonly #commit: GroupCommit;
  readonly #retained: RetainedStore;
  readonly #outgoing: OutgoingQueue;
  readonly #sessions: SessionRecords;
  readonly #subscriptions: SubscriptionStore;
  readonly #packets: SessionPackets;
  #broker: PersistenceBroker | undefined;
  #aedes: Aedes | undefined;
  #sweep: NodeJS.Timeout | undefined;
  #destroyed = false;

  constructor(db: Database.Database, options: SqlitePersistenceOptions) {
    this.#db = db;
    this.#options = options;
    db.exec(BROKER_STATE_SCHEMA);
    this.#commit = new GroupCommit(db, synchronousOf(db), (error) => this.#lost(error));
    this.#retained = new RetainedStore(db, this.#commit);
    this.#outgoing = new OutgoingQueue(db, this.#commit);
    this.#subscriptions = new SubscriptionStore(db, this.#commit);
    this.#packets = new SessionPackets(db, this.#commit);
    this.#sessions = new SessionRecords(db, this.#commit, {
      connected: (clientId) => this.#connected(clientId),
      publishWill: (will) => this.#publishWill(will),
      wipe: (clientId) => this.#wipe(clientId),
      willDone: (clientId, error) => this.#willDone(clientId, error),
      sessionExpired: (clientId) => {
        this.#options.counters.count('mqtt.sessions.expired');
        this.#options.logger.info({ clientId }, 'saved session expired (its Session Expiry Interval passed since before the restart)');
      },
      failed: (error) => this.#failed(error, 'acting on saved sessions and wills of the previous run failed; trying again'),
    });
  }

  /** The broker given to `setup`. */
  get broker(): PersistenceBroker | undefined {
    return this.#broker;
  }

  /** The login that owns each saved session, kept with it (see session-owners.ts). */
  get owners(): Pick<SessionRecords, 'savedOwner' | 'saveOwner'> {
    return this.#sessions;
  }

  /** Called by aedes when it starts: loads the subscriptions into memory. */
  async setup(broker: PersistenceBroker): Promise<void> {
    this.#broker = broker;
    this.#subscriptions.load();
  }

  /**
   * Follows the sessions of `aedes` (the broker this persistence was set up with), and carries
   * over those the previous run left: their expiry, and the publication of wills that run did
   * not publish. Call once, before the broker listens.
   */
  async watch(aedes: Aedes): Promise<void> {
    this.#aedes = aedes;
    const guarded = (what: string, f: () => void) => {
      try {
        f();
      } catch (error) {
        this.#failed(error, `recording a session's ${what} failed`);
      }
    };
    aedes.on('client', (client) => guarded('start', () => this.#sessions.opened(client)));
    aedes.on('clientDisconnect', (client) => guarded('end of connection', () => this.#sessions.closed(client, Date.now())));
    aedes.on('sessionExpired', (client) => {
      this.#options.counters.count('mqtt.sessions.expired');
      guarded('expiry', () => this.#sessions.ended(client.id));
    });
    const carried = await this.#sessions.carryOver(aedes.id, Date.now());
    const { subsCount } = await this.#subscriptions.count();
    this.#options.logger.info(
      { sessions: carried.sessions, expiring: carried.expiring, wills: carried.wills, subscriptions: subsCount },
      `broker state loaded: ${carried.sessions} saved session(s), ${carried.wills} will(s) to publish`,
    );
    this.#sweep = setInterval(() => this.#expireMessages(), EXPIRY_SWEEP_MS);
    this.#sweep.unref();
  }

  storeRetained(packet: StoredPacket): Promise<void> {
    return this.#retained.store(packet);
  }

  createRetainedStreamCombi(patterns: readonly string[]): Readable {
    return this.#retained.stream(patterns);
  }

  createRetainedStream(pattern: string): Readable {
    return this.#retained.stream([pattern]);
  }

  addSubscriptions(client: ClientRef, subs: readonly SubscriptionRecord[]): Promise<void> {
    return this.#subscriptions.add(client, subs);
  }

  removeSubscriptions(client: ClientRef, topics: readonly string[]): Promise<void> {
    return this.#subscriptions.remove(client, topics);
  }

  subscriptionsByClient(client: ClientRef): Promise<SubscriptionRecord[]> {
    return this.#subscriptions.byClient(client);
  }

  countOffline(): Promise<{ subsCount: number; clientsCount: number }> {
    return this.#subscriptions.count();
  }

  subscriptionsByTopic(topic: string): Promise<TopicSubscription[]> {
    return this.#subscriptions.byTopic(topic);
  }

  cleanSubscriptions(client: ClientRef): Promise<void> {
    return this.#subscriptions.clean(client);
  }

  outgoingEnqueue(sub: { readonly clientId: string }, packet: StoredPacket): Promise<void> {
    return this.#outgoing.enqueue([sub.clientId], packet);
  }

  outgoingEnqueueCombi(subs: readonly { readonly clientId: string }[], packet: StoredPacket): Promise<void> {
    return this.#outgoing.enqueue(
      subs.map((s) => s.clientId),
      packet,
    );
  }

  outgoingUpdate(client: ClientRef, packet: StoredPacket): Promise<void> {
    return this.#outgoing.update(client.id, packet);
  }

  async outgoingClearMessageId(client: ClientRef, packet: StoredPacket): Promise<StoredPacket | undefined> {
    return this.#outgoing.clear(client.id, (packet as Partial<StoredPacket> | undefined)?.messageId);
  }

  outgoingStream(client: ClientRef): Readable {
    return this.#outgoing.stream(client.id);
  }

  incomingStorePacket(client: ClientRef, packet: StoredPacket): Promise<void> {
    return this.#packets.storeIncoming(client, packet);
  }

  async incomingGetPacket(client: ClientRef, packet: { readonly messageId?: number | undefined }): Promise<StoredPacket> {
    return this.#packets.incoming(client, packet.messageId);
  }

  incomingDelPacket(client: ClientRef, packet: { readonly messageId?: number | undefined }): Promise<void> {
    return this.#packets.deleteIncoming(client, packet.messageId);
  }

  cleanIncoming(client: ClientRef): Promise<void> {
    return this.#packets.cleanIncoming(client);
  }

  putWill(client: ClientRef, packet: StoredPacket): Promise<void> {
    packet.brokerId = this.#broker?.id;
    packet.clientId = client.id;
    // aedes passes the connecting client.
    if (this.#options.willAllowed !== undefined && !this.#options.willAllowed(client as Client, packet)) return Promise.resolve();
    return this.#packets.putWill(client, packet);
  }

  async getWill(client: ClientRef): Promise<StoredPacket | undefined> {
    return this.#packets.will(client);
  }

  delWill(client: ClientRef): Promise<StoredPacket | undefined> {
    return this.#packets.deleteWill(client);
  }

  /** Stored wills of brokers not in `brokers` (aedes publishes those of brokers gone quiet); a will carried over from the previous run is published by this persistence instead. */
  streamWill(brokers: Readonly<Record<string, unknown>> = {}): Readable {
    return this.#packets.streamWills(brokers);
  }

  getClientList(topic: string): Readable {
    return this.#subscriptions.clientList(topic);
  }

  /** Commits what is pending and closes the database. aedes does not call it: the embedded broker does, after aedes closed. */
  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    this.#destroyed = true;
    clearInterval(this.#sweep);
    this.#sessions.close();
    // The last writes of connections aedes just closed (a will's removal) come in this turn.
    await new Promise((resolve) => setImmediate(resolve));
    this.#commit.close();
    this.#db.close();
  }

  #connected(clientId: string): boolean {
    return this.#aedes !== undefined && aedesInternals(this.#aedes).clients[clientId] !== undefined;
  }

  /** Removes a session's subscriptions, queue and QoS 2 state, inside the caller's transaction. */
  #wipe(clientId: string): void {
    this.#subscriptions.dropClient(clientId);
    this.#outgoing.dropClient(clientId);
    this.#packets.dropIncoming(clientId);
  }

  /** A will of the previous run, published as aedes publishes the wills of a broker that is gone. */
  #publishWill(will: StoredPacket): Promise<void> {
    const aedes = this.#aedes;
    if (aedes === undefined) return Promise.reject(new Error('broker not started'));
    const packet = will as unknown as AedesPublishPacket;
    return new Promise<void>((resolve, reject) => {
      aedes.authorizePublish(null, packet, (refused) => {
        if (refused) reject(refused);
        else aedes.publish(packet, (error) => (error ? reject(error) : resolve()));
      });
    });
  }

  #willDone(clientId: string, error: Error | undefined): void {
    this.#options.counters.count('mqtt.wills.carried_over', { result: error === undefined ? 'published' : 'refused' });
    if (error === undefined) this.#options.logger.info({ clientId }, 'published the will of a client whose connection ended with the previous run');
    else this.#options.logger.warn({ clientId, err: error }, 'the will of a client whose connection ended with the previous run was not published');
  }

  #expireMessages(): void {
    try {
      const now = Date.now();
      const queued = this.#outgoing.expire(now, (clientId) => this.#connected(clientId));
      const retained = this.#retained.expire(now);
      if (queued > 0) this.#options.counters.count('mqtt.messages.expired', { where: 'queue' }, queued);
      if (retained > 0) this.#options.counters.count('mqtt.messages.expired', { where: 'retained' }, retained);
    } catch (error) {
      this.#failed(error, 'removing expired messages failed; trying again at the next sweep');
    }
  }

  /** A transaction was rolled back: what memory holds of the subscriptions is read again from disk. */
  #lost(error: Error): void {
    this.#options.counters.count('mqtt.state.write_failures');
    this.#options.logger.error({ err: error }, 'broker state: a transaction failed and was rolled back; the clients waiting for it get errors');
    try {
      this.#subscriptions.load();
    } catch (reload) {
      this.#options.logger.error({ err: reload }, 'broker state: reading the subscriptions again failed');
    }
  }

  #failed(error: unknown, what: string): void {
    this.#options.counters.count('mqtt.broker.errors');
    this.#options.logger.warn({ err: error }, `broker state: ${what}`);
  }
}

/** The connection's synchronous level, as openSqlite set it (FULL is 2, NORMAL 1). */
function synchronousOf(db: Database.Database): Synchronous {
  return (db.pragma('synchronous', { simple: true }) as number) >= 2 ? 'full' : 'normal';
}
