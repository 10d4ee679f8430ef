import type { Aedes, AedesPublishPacket, Client, PublishPacket } from 'aedes';
import { loadLeanMqttPacket } from './lean-mqtt-packet.ts';
import { assertPatched } from './patched.ts';
import type { Logger } from 'pino';
import type { Counters } from '../core/component.ts';
import type { Source } from '../core/stream.ts';
import type { TopicLimits } from '../core/topic.ts';
import type { DeviceAuthenticator, Refusal } from './auth.ts';
import { type Connection, type Listener, type ListenerOptions, type TlsSettings, type WebSocketListenerOptions, listenerSpecs, openListeners } from './listeners.ts';
import { guardConnection } from './packet-guard.ts';
import { PEER_CLOSE_GRACE_MS, watchPeerClose } from './peer-close.ts';
import { RECEIVE_MAXIMUM, packetTooLargeFarewell } from './protocol-refusals.ts';
import { watchConnections } from './connection-events.ts';
import { type Command, CommandTracker, type PublishedCommand } from './command-tracker.ts';
import { aedesInternals, handleUnread } from './aedes-internals.ts';
import { DeviceAdmission } from './device-admission.ts';
import { PublishIntake } from './publish-intake.ts';
import { mayPublish } from './acl.ts';
import { type BrokerStateSettings, openBrokerState } from './persistence/open.ts';
import type { SqlitePersistence } from './persistence/sqlite-persistence.ts';
import { steadyNow } from '../core/steady-clock.ts';
import { DEFAULT_REFUSAL_LOG_INTERVAL_MS, RefusalLog } from './refusal-log.ts';
import { ClientRefusals, DEFAULT_REFUSAL_LIMITS, type RefusalLimits } from './client-refusals.ts';
import { SocketGate, type SocketRefusal } from './socket-gate.ts';
import { type BrokerStateLimits, QUOTA_EXCEEDED, StateRefusals, SubscriptionCap } from './state-limits.ts';

const DEFAULT_MAX_PACKET_BYTES = 256 * 1024;
const DEFAULT_TOPIC_LIMITS: TopicLimits = { maxLength: 1024, maxLevels: 32 };
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const DEFAULT_MAX_SOCKETS_PER_ADDRESS = 1000;

export interface EmbeddedBrokerOptions {
  readonly host: string;
  /** Plain TCP port; 0 picks a free port. */
  readonly port: number;
  /** Most open sockets on the TCP port; no limit when absent. */
  readonly maxConnections?: number;
  /** A TLS listener (mqtts), off when absent. */
  readonly tls?: ListenerOptions & TlsSettings;
  /** A WebSocket listener (ws), off when absent. */
  readonly websocket?: WebSocketListenerOptions;
  readonly logger: Logger;
  readonly counters: Counters;
  /** Who may connect and what they may do; without it every client is let in with no limits. */
  readonly auth?: DeviceAuthenticator;
  /** A socket that has not delivered a whole CONNECT within this time of its accept (TLS handshake and WebSocket upgrade included) is closed. */
  readonly connectTimeoutMs?: number;
  /** Most sockets one address may have open on all listeners together, counted from accept. */
  readonly maxSocketsPerAddress?: number;
  /** How refusals are logged (first line, then a summary per interval) and when a client refused too often is disconnected. */
  readonly refusals?: Partial<RefusalLimits> & { readonly logIntervalMs?: number };
  /** A subscriber that does not read its messages for this long is disconnected. */
  readonly drainTimeoutMs?: number;
  /** Largest MQTT packet a client may send; a larger one closes its connection before it is read. */
  readonly maxPacketBytes?: number;
  /** MQTT 5: topic aliases a client may set up per connection; 0 (the default here) turns them off. */
  readonly topicAliasMaximum?: number;
  /** MQTT 5: longest session expiry a client may ask for; no limit when absent. */
  readonly maxSessionExpirySeconds?: number;
  /** Longest keep alive a client may ask for (MQTT 5: imposed as Server Keep Alive; 3.1.1: refused); no limit when absent. */
  readonly maxKeepAliveSeconds?: number;
  /** Longest and deepest topic or filter a client may use. */
  readonly topicLimits?: TopicLimits;
  /** Runs after the broker exists and before it listens: the moment to tap it. */
  readonly beforeListen?: (broker: EmbeddedBroker) => void;
  /** Where retained messages and saved sessions are kept (SQLite), so that they survive a restart; in memory when absent. */
  readonly state?: BrokerStateSettings;
  /** Bounds on subscriptions, retained messages, queues and MQTT 3.1.1 sessions (the last three with `state` only); none when absent. */
  readonly limits?: BrokerStateLimits;
  /**
   * Live messages a resumed session holds back while its queue is read, to send after it
   * (1,024); past it they are dropped from memory and the queue, which holds them too, is read
   * again.
   */
  readonly resumeHeldLimit?: number;
}

/**
 * The MQTT broker devices connect to (aedes on a TCP listener, and optionally TLS and
 * WebSocket ones, see listeners.ts). Bridges tap it with topic filters: each device PUBLISH
 * that matches a tap becomes a Delivery, and the device's PUBACK (QoS 1) or PUBREC (QoS 2) is
 * sent only when every matching tap acked it. A nack closes the device's connection without
 * acknowledging, so the device sends it again. QoS 0 messages go the same way but the device
 * is never told about the outcome.
 *
 * This class owns aedes and the listeners; who may connect, subscribe and receive is
 * DeviceAdmission's (device-admission.ts), the path of a device's publish to the taps is
 * PublishIntake's (publish-intake.ts), and commands to devices are CommandTracker's.
 */
export class EmbeddedBroker {
  readonly #aedes: Aedes;
  #listeners: readonly Listener[] = [];
  readonly #options: EmbeddedBrokerOptions;
  readonly #commands: CommandTracker;
  readonly #admission: DeviceAdmission;
  readonly #intake: PublishIntake;
  readonly #state: SqlitePersistence | undefined;
  readonly #refusals: StateRefusals;
  readonly #subscriptionCap: SubscriptionCap | undefined;
  readonly #clientRefusals: ClientRefusals;
  /** Ends, for each connection, the deadline its socket got at accept. */
  readonly #connectArrivals = new WeakMap<object, () => void>();

  private constructor(aedes: Aedes, options: EmbeddedBrokerOptions, state: SqlitePersistence | undefined, refusals: StateRefusals, clientRefusals: ClientRefusals) {
    this.#aedes = aedes;
    this.#options = options;
    this.#state = state;
    this.#refusals = refusals;
    this.#clientRefusals = clientRefusals;
    if (options.limits !== undefined) {
      const cap = new SubscriptionCap(options.limits.subscriptionsPerClient);
      this.#subscriptionCap = cap;
      aedes.on('subscribe', (_subs, client) => cap.subscribed(client));
    }
    this.#commands = new CommandTracker(aedes, state?.commands);
    const topicLimits = options.topicLimits ?? DEFAULT_TOPIC_LIMITS;
    const admission = new DeviceAdmission(aedes, {
      logger: options.logger,
      counters: options.counters,
      auth: options.auth,
      topicLimits,
      savedOwners: state?.owners,
      refusals: clientRefusals,
    });
    this.#admission = admission;
    this.#intake = new PublishIntake(aedes, {
      logger: options.logger,
      counters: options.counters,
      topicLimits,
      acl: options.auth !== undefined,
      identity: (client) => admission.identity(client),
      refusals: clientRefusals,
    });
  }

  static async start(options: EmbeddedBrokerOptions): Promise<EmbeddedBroker> {
    let broker: EmbeddedBroker | undefined;
    const self = () => broker as EmbeddedBroker;
    const clientRefusals = new ClientRefusals(
      new RefusalLog({ logger: options.logger, intervalMs: options.refusals?.logIntervalMs ?? DEFAULT_REFUSAL_LOG_INTERVAL_MS }),
      options.counters,
      { ...DEFAULT_REFUSAL_LIMITS, ...options.refusals },
    );
    const connectTimeout = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const gate = new SocketGate({
      maxPerAddress: options.maxSocketsPerAddress ?? DEFAULT_MAX_SOCKETS_PER_ADDRESS,
      connectTimeoutMs: connectTimeout,
      onRefuse: (reason, address, protocol) => self().#refuseSocket(protocol, reason, address),
    });
    // A limit refused to a connected client (its subscriptions, its retained messages) counts
    // towards disconnecting it like any refusal; an offline session's full queue does not.
    const refusals = new StateRefusals(options.logger, options.counters, (clientId, limit) => {
      const client = broker === undefined ? undefined : aedesInternals(broker.#aedes).clients[clientId];
      if (client !== undefined) clientRefusals.counted(client, limit);
    });
    const state =
      options.state === undefined
        ? undefined
        : openBrokerState(options.state, {
            logger: options.logger,
            counters: options.counters,
            willAllowed: (client, will) => self().#mayPublishWill(client, will.topic ?? ''),
            logins: options.auth === undefined ? undefined : { identity: (client) => self().#admission.identity(client), standing: options.auth },
            limits: options.limits,
            refusals,
          });
    // aedes is imported here, not at the top: mqtt-packet must load first, with its loggers
    // that are off doing nothing and without streams (lean-mqtt-packet.ts), and a static
    // import loads every CommonJS module of aedes' graph before any module of Ferry's runs.
    loadLeanMqttPacket();
    const { Aedes } = await import('aedes');
    const aedes = await Aedes.createBroker({
      ...(state === undefined ? {} : { persistence: state }),
      // The socket gate's deadline runs from accept and usually ends first; aedes' own starts
      // when it is handed the connection (after the TLS handshake or the WebSocket upgrade).
      connectTimeout,
      // A subscriber whose socket stays full this long is disconnected: while aedes waits for
      // it to drain, delivery to every other subscriber of the same messages waits too.
      drainTimeout: options.drainTimeoutMs ?? 10_000,
      // MQTT 5 clients are told the limits in CONNACK. The packet guard enforces the size
      // before aedes sees the packet; aedes' own check is a second line.
      maximumPacketSize: options.maxPacketBytes ?? DEFAULT_MAX_PACKET_BYTES,
      topicAliasMaximum: options.topicAliasMaximum ?? 0,
      receiveMaximum: RECEIVE_MAXIMUM,
      sessionExpiryIntervalLimit: options.maxSessionExpirySeconds ?? 0,
      keepaliveLimit: options.maxKeepAliveSeconds ?? 0,
      ...(options.resumeHeldLimit === undefined ? {} : { resumeHeldLimit: options.resumeHeldLimit }),
      // MQTT 5 Message Expiry by the clock sessions and commands go by: a step of the wall clock expires nothing.
      now: steadyNow,
      preConnect: (client, packet, callback) => {
        self().#connectArrived(client);
        callback(null, self().#admission.admit(client, packet));
      },
      authenticate: (client, username, password, done) => {
        self()
          .#admission.authenticate(client, username, password)
          .then(
            (refusal) => done(refusal ?? null, refusal === undefined),
            (error: unknown) => done(Object.assign(error instanceof Error ? error : new Error(String(error)), { returnCode: 3 as const }), false),
          );
      },
      authorizeSubscribe: (client, subscription, callback) => {
        if (!self().#admission.maySubscribe(client, subscription.topic)) callback(null, null);
        // aedes (as patched) answers a number with it as the SUBACK's reason code (0x80 under MQTT 3.1.1).
        else if (!self().#underSubscriptionCap(client, subscription.topic)) callback(null, QUOTA_EXCEEDED as never);
        else callback(null, subscription);
      },
      // aedes (as patched) answers false with UNSUBACK 0x87 (a plain UNSUBACK under MQTT 3.1.1), removing nothing.
      authorizeUnsubscribe: (client, packet, callback) => callback(null, self().#admission.mayUnsubscribe(client, packet.unsubscriptions)),
      authorizePublish: (client, packet, callback) => {
        if (self().#retainRefused(client, packet)) {
          // aedes (as patched) answers with the error's reason code in the PUBACK (MQTT 5).
          callback(Object.assign(new Error('retained message quota exceeded'), { reasonCode: QUOTA_EXCEEDED }));
          return;
        }
        self().#intake.authorize(client, packet, callback);
      },
      // Before the broker object exists only aedes' own $SYS messages go out.
      authorizeForward: (client, packet) => (broker === undefined ? packet : broker.#forward(client, packet)),
    }).catch(async (error: unknown) => {
      await state?.destroy();
      throw error;
    });
    try {
      assertPatched(aedes);
    } catch (error) {
      await new Promise<void>((done) => aedes.close(() => done()));
      await state?.destroy();
      throw error;
    }
    broker = new EmbeddedBroker(aedes, options, state, refusals, clientRefusals);
    watchConnections(aedes, options.logger, options.counters, clientRefusals.log);
    try {
      await state?.watch(aedes);
      options.beforeListen?.(broker);
      const specs = listenerSpecs(options, options.maxPacketBytes ?? DEFAULT_MAX_PACKET_BYTES);
      broker.#listeners = await openListeners(specs, (protocol) => ({
        onConnection: (connection) => self().#handle(connection),
        onRefuse: (reason, address) => self().#refuseSocket(protocol, reason, address),
        gate,
      }));
      for (const l of broker.#listeners) {
        options.logger.info({ protocol: l.protocol, host: l.host, port: l.port, maxConnections: l.maxConnections }, `${l.protocol} listener on ${l.host}:${l.port}`);
      }
    } catch (error) {
      await new Promise<void>((done) => aedes.close(() => done()));
      await state?.destroy();
      throw error;
    }
    return broker;
  }

  /** Port of the plain TCP listener. */
  get port(): number {
    return this.#listeners[0]?.port ?? this.#options.port;
  }

  get listeners(): readonly { readonly protocol: string; readonly host: string; readonly port: number; readonly connections: number }[] {
    return this.#listeners.map((l) => ({ protocol: l.protocol, host: l.host, port: l.port, connections: l.connections }));
  }

  get host(): string {
    return this.#options.host;
  }

  get connectedClients(): number {
    return this.#aedes.connectedClients;
  }

  /** Deliveries not yet settled (their devices are waiting for an acknowledgement). */
  get inFlight(): number {
    return this.#intake.inFlight;
  }

  /** A source of the device messages whose topics match any of `filters`. */
  tap(name: string, filters: readonly string[]): Source {
    return this.#intake.tap(name, filters);
  }

  /**
   * Publishes a message to the devices subscribed to its topic (no ACL: it comes from the
   * gateway's operator); the outcome tells when a device acknowledged it. See CommandTracker.
   */
  publishCommand(command: Command): PublishedCommand {
    return this.#commands.publish(command);
  }

  /**
   * Stops accepting connections and refuses QoS 1 and 2 publishes (their devices send them again
   * to the next start); resolves when in-flight deliveries settled or `timeoutMs` passed.
   */
  async drain(timeoutMs: number): Promise<boolean> {
    const settled = this.#intake.drain(timeoutMs);
    for (const listener of this.#listeners) listener.close();
    return settled;
  }

  async close(): Promise<void> {
    for (const listener of this.#listeners) listener.close();
    this.#intake.close();
    await new Promise<void>((done) => this.#aedes.close(() => done()));
    await this.#state?.destroy();
    this.#clientRefusals.log.close();
  }

  #handle(connection: Connection): void {
    const { stream, address: from } = connection;
    this.#admission.opened(connection);
    this.#connectArrivals.set(stream, connection.connectArrived);
    let client: Client | undefined;
    const guarded = guardConnection(stream, {
      maxPacketBytes: this.#options.maxPacketBytes ?? DEFAULT_MAX_PACKET_BYTES,
      onRefuse: (reason, detail) => {
        this.#options.counters.count('mqtt.connections.refused', { reason });
        this.#clientRefusals.log.refused({ who: { address: from }, reason, message: 'MQTT packet refused; connection closed', detail: { detail } });
      },
      farewell: (reason) => packetTooLargeFarewell(client, reason),
    });
    // A device that closes while its messages are held (and its socket unread) is disconnected,
    // what it sent before closing handled.
    watchPeerClose(guarded, PEER_CLOSE_GRACE_MS, (rest) => {
      this.#options.logger.debug({ clientId: client?.id, address: from, unreadBytes: rest.length }, 'device closed its connection while its packets were unread: disconnected');
      if (client !== undefined) handleUnread(client, rest);
    });
    client = this.#aedes.handle(guarded, connection.request);
  }

  #connectArrived(client: Client): void {
    this.#connectArrivals.get(client.conn)?.();
    this.#connectArrivals.delete(client.conn);
  }

  #refuseSocket(protocol: string, reason: Refusal | SocketRefusal, address: string): void {
    this.#options.counters.count('mqtt.connections.refused', { reason });
    const message = reason === 'connect_timeout' ? 'connection closed: no CONNECT within mqtt.connectTimeoutMs of its accept' : 'connection refused';
    this.#clientRefusals.log.refused({ who: { address }, reason, message, detail: { protocol } });
  }

  /** The per-client subscription cap (`mqtt.limits.subscriptionsPerClient`); refusals are counted and logged here. */
  #underSubscriptionCap(client: Client, filter: string): boolean {
    const cap = this.#subscriptionCap;
    if (cap === undefined || cap.allows(client, filter)) return true;
    const outcome = client.version === 5 ? 'SUBACK 0x97 (quota exceeded)' : 'SUBACK 0x80';
    this.#refusals.refused(
      client.id,
      'subscriptionsPerClient',
      this.#options.limits?.subscriptionsPerClient ?? 0,
      `subscription to '${filter.slice(0, 200)}' refused with ${outcome}`,
    );
    return false;
  }

  /**
   * The limits on retained messages: true when the PUBLISH is refused (MQTT 5: PUBACK 0x97, the
   * message is not taken). MQTT 3.1.1 has no negative PUBACK: the message is taken as an
   * ordinary one, delivered and buffered but not retained.
   */
  #retainRefused(client: Client | null, packet: PublishPacket): boolean {
    if (client === null || !packet.retain || this.#state === undefined) return false;
    const limit = this.#state.retainedRefusal(client.id, packet.topic, packet.payload);
    if (limit === undefined) return false;
    const value = this.#options.limits?.[limit] ?? 0;
    if (client.version === 5) {
      this.#refusals.refused(
        client.id,
        limit,
        value,
        `retained PUBLISH to '${packet.topic.slice(0, 200)}' refused with ${packet.qos > 0 ? 'PUBACK 0x97 (quota exceeded)' : 'nothing (QoS 0: dropped)'}`,
      );
      return true;
    }
    this.#refusals.refused(
      client.id,
      limit,
      value,
      `retained PUBLISH to '${packet.topic.slice(0, 200)}' taken as an ordinary message, not retained (MQTT 3.1.1 has no negative PUBACK)`,
    );
    packet.retain = false;
    return false;
  }

  /** Whether the client may publish its will (one it may not is not kept in the broker's state). */
  #mayPublishWill(client: Client, topic: string): boolean {
    if (this.#options.auth === undefined) return !topic.startsWith('$');
    const identity = this.#admission.identity(client);
    return identity !== undefined && mayPublish(identity, topic);
  }

  /** aedes' authorizeForward: the client's ACL first, then the command tracker. */
  #forward(client: Client, packet: AedesPublishPacket): AedesPublishPacket | null {
    return this.#admission.mayForward(client, packet) ? this.#commands.forward(client, packet) : null;
  }
}
