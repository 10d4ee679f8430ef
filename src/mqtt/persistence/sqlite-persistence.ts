import type { Readable } from 'node:stream';
import type { Aedes, Client } from 'aedes';
import type Database from 'better-sqlite3';
import type { Logger } from 'pino';
import type { Counters } from '../../core/component.ts';
import type { Synchronous } from '../../sqlite/connection.ts';
import { asError } from '../../core/errors.ts';
import { type BrokerStateLimits, type StateLimit, type StateRefusals, payloadLength } from '../state-limits.ts';
import type { Identity } from '../acl.ts';
import { aedesInternals } from '../aedes-internals.ts';
import { CarriedWills, type StandingLogins } from './carried-wills.ts';
import { CommandMemory } from './command-memory.ts';
import { ConnectWrites } from './connect-writes.ts';
import { GroupCommit } from './group-commit.ts';
import type { ClientRef, SubscriptionRecord, TopicSubscription } from './memory-parts.ts';
import { OutgoingQueue, type QueueCap } from './outgoing-queue.ts';
import type { StoredPacket } from './packet-codec.ts';
import { RetainedStore } from './retained-store.ts';
import { reportedRead, reportedStream } from './reported-reads.ts';
import { migrateBrokerState } from './schema.ts';
import { SessionPackets } from './session-packets.ts';
import { SessionRecords } from './session-records.ts';
import { SubscriptionStore } from './subscription-store.ts';

/** How often messages past their MQTT 5 Message Expiry Interval are removed from disk. */
const EXPIRY_SWEEP_MS = 60_000;
/** How often the file is checked for changes another process made (`ferry sessions purge`), besides before each restore and each QoS 1 or 2 publish. */
const OUTSIDE_CHANGE_MS = 1000;

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
  /** The broker's logins (absent when off): each will is stored with its login, checked again before a carried-over one is published (carried-wills.ts). */
  readonly logins?: { readonly identity: (client: Client) => Identity | undefined; readonly standing: StandingLogins } | undefined;
  /** Bounds on queues, retained messages and MQTT 3.1.1 sessions; none when absent (aedes-persistence's own tests). */
  readonly limits?: BrokerStateLimits | undefined;
  /** Where a message not queued for a session over its limit is counted and logged. */
  readonly refusals?: StateRefusals | undefined;
  /** Told of every read, write, commit or sweep of the state that failed (openBrokerState looks for corruption in them). */
  readonly onFailure?: ((error: Error) => void) | undefined;
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
  /** What is kept of the commands published through the broker (see command-memory.ts). */
  readonly commands: CommandMemory;
  readonly #sessions: SessionRecords;
  readonly #subscriptions: SubscriptionStore;
  readonly #packets: SessionPackets;
  readonly #wills: CarriedWills;
  readonly #connectWrites: ConnectWrites;
  readonly #queueCap: QueueCap | undefined;
  #broker: PersistenceBroker | undefined;
  #aedes: Aedes | undefined;
  #sweep: NodeJS.Timeout | undefined;
  #outsideChanges: NodeJS.Timeout | undefined;
  readonly #dataVersion: Database.Statement;
  #seenVersion: unknown;
  /** Set while this event-loop turn already looked for another process's commit. */
  #lookedThisTurn = false;
  #destroyed = false;

  constructor(db: Database.Database, options: SqlitePersistenceOptions) {
    this.#db = db;
    this.#options = options;
    migrateBrokerState(db);
    // Each write runs in a savepoint (group-commit.ts): SQLite copies every page a savepoint
    // first changes to a sub-journal, a temporary file unless this; in memory it halved the
    // cost of a publish queued for 100 offline sessions.
    db.pragma('temp_store = MEMORY');
    this.#dataVersion = db.prepare('PRAGMA data_version').pluck();
    this.#seenVersion = this.#dataVersion.get();
    this.#commit = new GroupCommit(db, synchronousOf(db), (error) => this.#lost(error), options.onFailure);
    this.#retained = new RetainedStore(db, this.#commit);
    this.commands = new CommandMemory(db, this.#commit, options.onFailure);
    this.#outgoing = new OutgoingQueue(db, this.#commit, this.commands);
    this.#subscriptions = new SubscriptionStore(db, this.#commit);
    this.#packets = new SessionPackets(db, this.#commit);
    this.#wills = new CarriedWills({
      logger: options.logger,
      counters: options.counters,
      logins: options.logins?.standing,
      retainedRefusal: (clientId, topic, payload) => this.retainedRefusal(clientId, topic, payload),
      refused: (clientId, limit, what) => this.#refused(clientId, limit, what),
    });
    this.#sessions = new SessionRecords(db, this.#commit, {
      connected: (clientId) => this.#connected(clientId),
      publishWill: (clientId, will, owner) =>
        this.#aedes === undefined ? Promise.reject(new Error('broker not started')) : this.#wills.publish(this.#aedes, clientId, will, owner),
      wipe: (clientId) => this.#wipe(clientId),
      willDone: (clientId, error) => this.#wills.done(clientId, error),
      sessionExpired: (clientId) => {
        this.#options.counters.count('mqtt.sessions.expired');
        this.#options.logger.info({ clientId }, 'saved session expired: its client stayed away longer than its session expiry');
      },
      failed: (error) => this.#failed(error, 'acting on saved sessions and wills of the previous run failed; trying again'),
      legacyExpirySeconds: options.limits?.sessionExpirySeconds,
    });
    const failed = (error: Error) => this.#failed(error, 'recording the end of a connection closed before its CONNACK failed');
    this.#connectWrites = new ConnectWrites(this.#commit, this.#packets, this.#sessions, { ...options, failed });
    const limits = options.limits;
    this.#queueCap =
      limits === undefined
        ? undefined
        : {
            queuedPerSession: limits.queuedPerSession,
            queuedBytesPerSession: limits.queuedBytesPerSession,
            connected: (clientId) => this.#connected(clientId),
            refused: (clientId, limit) => this.#refused(clientId, limit, 'a message was not queued for this offline session (dropped for it alone)'),
          };
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
    // A connection taken over leaves the session's record to the new one's connect (connect-writes.ts).
    aedes.on('clientDisconnect', (client) => aedesInternals(aedes)._takingOver.has(client.id) || guarded('end of connection', () => this.#sessions.closed(client)));
    aedes.on('sessionExpired', (client) => {
      this.#options.counters.count('mqtt.sessions.expired');
      guarded('expiry', () => this.#sessions.ended(client.id));
    });
    const carried = await this.#sessions.carryOver(aedes.id);
    const { subsCount } = await this.#subscriptions.count();
    this.#options.logger.info(
      { sessions: carried.sessions, expiring: carried.expiring, wills: carried.wills, subscriptions: subsCount },
      `broker state loaded: ${carried.sessions} saved session(s), ${carried.wills} will(s) to publish`,
    );
    this.#sweep = setInterval(() => this.#expireMessages(), EXPIRY_SWEEP_MS);
    this.#sweep.unref();
    this.#outsideChanges = setInterval(() => this.#followOutsideChanges(), OUTSIDE_CHANGE_MS);
    this.#outsideChanges.unref();
  }

  /** aedes (as patched) sets the publishing client's id on the packet: the message counts in its usage. */
  storeRetained(packet: StoredPacket): Promise<void> {
    return this.#retained.store(packet, typeof packet['clientId'] === 'string' ? packet['clientId'] : null);
  }

  /**
   * The limit that storing this retained message for the client would go past (as the state is
   * now; publishes in flight at the same time may pass it by a few), or undefined.
   */
  retainedRefusal(clientId: string, topic: string, payload: unknown): StateLimit | undefined {
    const limits = this.#options.limits;
    const bytes = payloadLength(payload);
    if (limits === undefined || bytes === 0) return undefined;
    return reportedRead(this.#options.onFailure, () => this.#retained.wouldExceed(clientId, topic, bytes, limits));
  }

  createRetainedStreamCombi(patterns: readonly string[]): Readable {
    return reportedStream(this.#options.onFailure, () => this.#retained.stream(patterns));
  }

  createRetainedStream(pattern: string): Readable {
    return reportedStream(this.#options.onFailure, () => this.#retained.stream([pattern]));
  }

  addSubscriptions(client: ClientRef, subs: readonly SubscriptionRecord[]): Promise<void> {
    return this.#subscriptions.add(client, subs);
  }

  removeSubscriptions(client: ClientRef, topics: readonly string[]): Promise<void> {
    return this.#subscriptions.remove(client, topics);
  }

  /** aedes restores a session from this: a purge by another process is looked for first. */
  subscriptionsByClient(client: ClientRef): Promise<SubscriptionRecord[]> {
    this.#followOutsideChanges();
    return this.#subscriptions.byClient(client);
  }

  /** Whether the client id has a stored session: aedes (as patched) answers Session Present with it for one without subscriptions (see SessionRecords.resumable). */
  async sessionStored(clientId: string): Promise<boolean> {
    return reportedRead(this.#options.onFailure, () => this.#sessions.resumable(clientId));
  }

  countOffline(): Promise<{ subsCount: number; clientsCount: number }> {
    return this.#subscriptions.count();
  }

  /**
   * aedes queues a QoS 1 or 2 message for the sessions this returns: a purge by another process
   * is looked for first, once per event-loop turn (one PRAGMA; per message it cost ~15% of the
   * broker's CPU at QoS 1 ingest). Another process's commit is seen at most one turn later.
   */
  subscriptionsByTopic(topic: string): Promise<TopicSubscription[]> {
    if (!this.#lookedThisTurn) {
      this.#lookedThisTurn = true;
      setImmediate(() => {
        this.#lookedThisTurn = false;
      });
      this.#followOutsideChanges();
    }
    return this.#subscriptions.byTopic(topic);
  }

  cleanSubscriptions(client: ClientRef): Promise<void> {
    return reportedRead(this.#options.onFailure, () => this.#subscriptions.clean(client));
  }

  outgoingEnqueue(sub: { readonly clientId: string }, packet: StoredPacket): Promise<void> {
    return this.#outgoing.enqueue([sub.clientId], packet, this.#queueCap);
  }

  outgoingEnqueueCombi(subs: readonly { readonly clientId: string }[], packet: StoredPacket): Promise<void> {
    return this.#outgoing.enqueue(
      subs.map((s) => s.clientId),
      packet,
      this.#queueCap,
    );
  }

  outgoingUpdate(client: ClientRef, packet: StoredPacket): Promise<void> {
    return this.#outgoing.update(client.id, packet);
  }

  async outgoingClearMessageId(client: ClientRef, packet: StoredPacket): Promise<StoredPacket | undefined> {
    return reportedRead(this.#options.onFailure, () => this.#outgoing.clear(client.id, (packet as Partial<StoredPacket> | undefined)?.messageId));
  }

  outgoingStream(client: ClientRef): Readable {
    return reportedStream(this.#options.onFailure, () => this.#outgoing.stream(client.id));
  }

  incomingStorePacket(client: ClientRef, packet: StoredPacket): Promise<void> {
    return this.#packets.storeIncoming(client, packet);
  }

  async incomingGetPacket(client: ClientRef, packet: { readonly messageId?: number | undefined }): Promise<StoredPacket> {
    return reportedRead(this.#options.onFailure, () => this.#packets.incoming(client, packet.messageId));
  }

  incomingDelPacket(client: ClientRef, packet: { readonly messageId?: number | undefined }): Promise<void> {
    return this.#packets.deleteIncoming(client, packet.messageId);
  }

  cleanIncoming(client: ClientRef): Promise<void> {
    return reportedRead(this.#options.onFailure, () => this.#packets.cleanIncoming(client));
  }

  putWill(client: ClientRef, packet: StoredPacket): Promise<void> {
    packet.brokerId = this.#broker?.id;
    packet.clientId = client.id;
    return this.#connectWrites.putWill(client, packet);
  }

  async getWill(client: ClientRef): Promise<StoredPacket | undefined> {
    return reportedRead(this.#options.onFailure, () => this.#packets.will(client));
  }

  /** aedes removes a will when it is done with, and as a client connects (then with the session's record, connect-writes.ts, as putWill). */
  delWill(client: ClientRef): Promise<StoredPacket | undefined> {
    return this.#connectWrites.delWill(client);
  }

  /** Stored wills of brokers not in `brokers` (aedes publishes those of brokers gone quiet); a will carried over from the previous run is published by this persistence instead. */
  streamWill(brokers: Readonly<Record<string, unknown>> = {}): Readable {
    return reportedStream(this.#options.onFailure, () => this.#packets.streamWills(brokers));
  }

  getClientList(topic: string): Readable {
    return this.#subscriptions.clientList(topic);
  }

  /** Commits what is pending and closes the database. aedes does not call it: the embedded broker does, after aedes closed. */
  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    this.#destroyed = true;
    clearInterval(this.#sweep);
    clearInterval(this.#outsideChanges);
    this.#sessions.close();
    // The last writes of connections aedes just closed (a will's removal) come in this turn.
    await new Promise((resolve) => setImmediate(resolve));
    this.#commit.close();
    this.#db.close();
  }

  #refused(clientId: string, limit: StateLimit, what: string): void {
    const value = this.#options.limits?.[limit] ?? 0;
    if (this.#options.refusals !== undefined) this.#options.refusals.refused(clientId, limit, value, what);
    else this.#options.counters.count('mqtt.state.refused', { limit });
  }

  /**
   * Another process committed to the file (`ferry sessions purge`; SQLite's data_version moves
   * only for other connections' commits): the subscriptions held in memory are read again.
   */
  #followOutsideChanges(): void {
    if (this.#destroyed) return;
    try {
      const version = this.#dataVersion.get();
      if (version === this.#seenVersion) return;
      this.#seenVersion = version;
      this.#subscriptions.load();
      this.#outgoing.recount();
    } catch (error) {
      this.#failed(error, 'reading the subscriptions again after another process changed the file failed');
    }
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

  #expireMessages(): void {
    try {
      const queued = this.#outgoing.expire((clientId) => this.#connected(clientId));
      const retained = this.#retained.expire();
      this.commands.expire();
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
    this.#outgoing.recount();
    try {
      this.#subscriptions.load();
    } catch (reload) {
      this.#options.logger.error({ err: reload }, 'broker state: reading the subscriptions again failed');
    }
  }

  #failed(error: unknown, what: string): void {
    this.#options.counters.count('mqtt.broker.errors');
    this.#options.logger.warn({ err: error }, `broker state: ${what}`);
    this.#options.onFailure?.(asError(error));
  }
}

/** The connection's synchronous level, as openSqlite set it (FULL is 2, NORMAL 1). */
function synchronousOf(db: Database.Database): Synchronous {
  return (db.pragma('synchronous', { simple: true }) as number) >= 2 ? 'full' : 'normal';
}
