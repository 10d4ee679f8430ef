import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { Aedes, type AedesPublishPacket, type Client, type ConnectPacket, type PublishPacket } from 'aedes';
import { Observable, type Subscriber } from 'rxjs';
import type { Logger } from 'pino';
import type { Counters } from '../core/component.ts';
import { FerryError, isFerryError } from '../core/errors.ts';
import { createDelivery, fanOut, type Delivery } from '../core/delivery.ts';
import { type Origin, createEnvelope } from '../core/envelope.ts';
import type { Source } from '../core/stream.ts';
import { type TopicLimits, invalidFilterWithin, invalidTopicReason, topicMatches } from '../core/topic.ts';
import { type Identity, mayPublish, maySubscribe } from './acl.ts';
import type { DeviceAuthenticator, Refusal } from './auth.ts';
import { type Connection, type Listener, type ListenerOptions, type TlsSettings, type WebSocketListenerOptions, listenerSpecs, openListeners } from './listeners.ts';
import { guardConnection } from './packet-guard.ts';
import { watchConnections } from './connection-events.ts';
import { type Command, CommandTracker, type PublishedCommand } from './command-tracker.ts';
import { aedesInternals } from './aedes-internals.ts';
import { userPropertyHeaders } from './user-properties.ts';
import { SessionGuard } from './session-guard.ts';

const DEFAULT_MAX_PACKET_BYTES = 256 * 1024;
const DEFAULT_TOPIC_LIMITS: TopicLimits = { maxLength: 1024, maxLevels: 32 };

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
  /** A socket that has not sent CONNECT within this time is closed. */
  readonly connectTimeoutMs?: number;
  /** A subscriber that does not read its messages for this long is disconnected. */
  readonly drainTimeoutMs?: number;
  /** Largest MQTT packet a client may send; a larger one closes its connection before it is read. */
  readonly maxPacketBytes?: number;
  /** MQTT 5: topic aliases a client may set up per connection; 0 (the default here) turns them off. */
  readonly topicAliasMaximum?: number;
  /** MQTT 5: longest session expiry a client may ask for; no limit when absent. */
  readonly maxSessionExpirySeconds?: number;
  /** Longest and deepest topic or filter a client may use. */
  readonly topicLimits?: TopicLimits;
  /** Runs after the broker exists and before it listens: the moment to tap it. */
  readonly beforeListen?: (broker: EmbeddedBroker) => void;
}

interface Tap {
  readonly name: string;
  readonly filters: readonly string[];
  readonly subscriber: Subscriber<Delivery>;
}

/** MQTT 5 DISCONNECT reason codes for a message the gateway could not take. */
const SERVER_BUSY = 0x89;
const QUOTA_EXCEEDED = 0x97;
const SERVER_SHUTTING_DOWN = 0x8b;

/**
 * aedes 2.0.0-beta.1 runs with patches/aedes+2.0.0-beta.1.patch (aedes 1.2.0's security
 * fixes), which `npm install` applies. An install that skipped scripts has the bare beta:
 * the broker then does not start rather than run without them.
 */
function assertPatched(aedes: Aedes): void {
  const internals = aedesInternals(aedes);
  if (Object.getPrototypeOf(internals.clients) === null && typeof internals.maxInflightInbound === 'number') return;
  throw new FerryError(
    'INTERNAL',
    'the installed aedes lacks the security fixes of patches/aedes+2.0.0-beta.1.patch (was it installed with --ignore-scripts?): run `npx patch-package` in the Ferry directory, or `npm ci` without --ignore-scripts',
  );
}

/** The MQTT 3.1.1 CONNACK return code for a refused login (aedes maps it to MQTT 5's reason code). */
function connackReturnCode(refusal: Refusal): 2 | 3 | 4 | 5 {
  switch (refusal) {
    case 'invalid_client_id':
    case 'client_id_in_use':
    case 'session_of_another_login':
      return 2; // identifier rejected
    case 'bad_credentials':
    case 'invalid_username':
      return 4; // bad user name or password
    case 'too_many_attempts':
    case 'server_busy':
      return 3; // server unavailable: a device tries again later
    default:
      return 5; // not authorized: unknown certificates, anonymous, the failure limits
  }
}

function samePayload(a: unknown, b: unknown): boolean {
  const bytes = (x: unknown) => (typeof x === 'string' ? Buffer.from(x) : x instanceof Uint8Array ? x : undefined);
  const [x, y] = [bytes(a), bytes(b)];
  return x !== undefined && y !== undefined && Buffer.compare(x, y) === 0;
}

/** What happens to a client whose publish is refused (for the log line). */
function refusalOutcome(client: Client | null, qos: number): string {
  // MQTT 3.1.1 has no negative PUBACK; aedes closes the connection. MQTT 5 has one.
  if (client === null || client.version !== 5) return 'closing the connection';
  return qos === 0 ? 'dropped (QoS 0)' : 'answered with reason code 0x87 (not authorized)';
}

/**
 * Message headers from an MQTT 5 PUBLISH: its user properties, and its content type as
 * `content-type` unless a user property already has that name.
 */
function propertyHeaders(properties: NonNullable<PublishPacket['properties']>): Record<string, string> {
  const headers = userPropertyHeaders(properties.userProperties);
  if (properties.contentType !== undefined && !Object.hasOwn(headers, 'content-type')) headers['content-type'] = properties.contentType;
  return headers;
}

/**
 * The MQTT broker devices connect to (aedes on a TCP listener, and optionally TLS and
 * WebSocket ones, see listeners.ts). Bridges tap it with topic filters: each device PUBLISH that matches a tap becomes a Delivery, and the device's
 * PUBACK (QoS 1) or PUBREC (QoS 2) is sent only when every matching tap acked it. A nack
 * closes the device's connection without acknowledging, so the device sends it again.
 * QoS 0 messages go the same way but the device is never told about the outcome.
 */
export class EmbeddedBroker {
  readonly #aedes: Aedes;
  #listeners: readonly Listener[] = [];
  readonly #options: EmbeddedBrokerOptions;
  readonly #taps = new Set<Tap>();
  readonly #identities = new WeakMap<Client, Identity>();
  readonly #origins = new WeakMap<Client, Origin[]>();
  /** Verified certificate names by connection stream (client.conn). */
  readonly #certNames = new WeakMap<object, string>();
  /** Each connection's client address, as its listener determined it (X-Forwarded-For from a trusted proxy). */
  readonly #addresses = new WeakMap<object, string>();
  #inFlight = 0;
  #drained: (() => void) | undefined;
  /** Set by drain: publishes at QoS 1 and 2 are refused from then on. */
  #draining = false;
  /** Per client, the last of its publishes waiting behind a QoS 2 repeat lookup. */
  readonly #behind = new WeakMap<Client, Promise<void>>();
  /** MQTT 5 clients sent a DISCONNECT by #refuseUnstored (aedes marks them closed only after it is written). */
  readonly #disconnecting = new WeakSet<Client>();
  readonly #commands: CommandTracker;
  readonly #sessions: SessionGuard;

  private constructor(aedes: Aedes, options: EmbeddedBrokerOptions) {
    this.#aedes = aedes;
    this.#options = options;
    this.#commands = new CommandTracker(aedes);
    this.#sessions = new SessionGuard(aedes, options.logger, options.counters);
  }

  static async start(options: EmbeddedBrokerOptions): Promise<EmbeddedBroker> {
    let broker: EmbeddedBroker | undefined;
    const self = () => broker as EmbeddedBroker;
    const aedes = await Aedes.createBroker({
      connectTimeout: options.connectTimeoutMs ?? 10_000,
      // A subscriber whose socket stays full this long is disconnected: while aedes waits for
      // it to drain, delivery to every other subscriber of the same messages waits too.
      drainTimeout: options.drainTimeoutMs ?? 10_000,
      // MQTT 5 clients are told the limits in CONNACK. The packet guard enforces the size
      // before aedes sees the packet; aedes' own check is a second line.
      maximumPacketSize: options.maxPacketBytes ?? DEFAULT_MAX_PACKET_BYTES,
      topicAliasMaximum: options.topicAliasMaximum ?? 0,
      sessionExpiryIntervalLimit: options.maxSessionExpirySeconds ?? 0,
      preConnect: (client, packet, callback) => callback(null, self().#admit(client, packet)),
      authenticate: (client, username, password, done) => {
        self().#authenticate(client, username, password).then(
          (refusal) => done(refusal ?? null, refusal === undefined),
          (error: unknown) => done(Object.assign(error instanceof Error ? error : new Error(String(error)), { returnCode: 3 as const }), false),
        );
      },
      authorizeSubscribe: (client, subscription, callback) => {
        callback(null, self().#maySubscribe(client, subscription.topic) ? subscription : null);
      },
      authorizePublish: (client, packet, callback) => {
        self().#onPublish(client, packet, callback);
      },
      // Before the broker object exists only aedes' own $SYS messages go out.
      authorizeForward: (client, packet) => (broker === undefined ? packet : broker.#forward(client, packet)),
    });
    try {
      assertPatched(aedes);
    } catch (error) {
      await new Promise<void>((done) => aedes.close(() => done()));
      throw error;
    }
    broker = new EmbeddedBroker(aedes, options);
    watchConnections(aedes, options.logger, options.counters);
    try {
      options.beforeListen?.(broker);
      const specs = listenerSpecs(options, options.maxPacketBytes ?? DEFAULT_MAX_PACKET_BYTES);
      broker.#listeners = await openListeners(specs, (protocol) => ({
        onConnection: (connection) => self().#handle(connection),
        onRefuse: (reason, address) => self().#refuseSocket(protocol, reason, address),
      }));
      for (const l of broker.#listeners) options.logger.info({ protocol: l.protocol, host: l.host, port: l.port }, `${l.protocol} listener on ${l.host}:${l.port}`);
    } catch (error) {
      await new Promise<void>((done) => aedes.close(() => done()));
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
    return this.#inFlight;
  }

  /** A source of the device messages whose topics match any of `filters`. */
  tap(name: string, filters: readonly string[]): Source {
    return new Observable<Delivery>((subscriber) => {
      const tap: Tap = { name, filters, subscriber };
      this.#taps.add(tap);
      return () => {
        this.#taps.delete(tap);
      };
    });
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
    this.#draining = true;
    for (const listener of this.#listeners) listener.close();
    if (this.#inFlight === 0) return true;
    return new Promise<boolean>((done) => {
      const timer = setTimeout(() => {
        this.#drained = undefined;
        done(false);
      }, timeoutMs);
      this.#drained = () => {
        clearTimeout(timer);
        done(true);
      };
    });
  }

  async close(): Promise<void> {
    for (const listener of this.#listeners) listener.close();
    for (const tap of this.#taps) tap.subscriber.complete();
    await new Promise<void>((done) => this.#aedes.close(() => done()));
  }

  #handle(connection: Connection): void {
    const { stream, address: from } = connection;
    if (connection.certName !== undefined) this.#certNames.set(stream, connection.certName);
    this.#addresses.set(stream, from);
    const guarded = guardConnection(stream, {
      maxPacketBytes: this.#options.maxPacketBytes ?? DEFAULT_MAX_PACKET_BYTES,
      onRefuse: (reason, detail) => {
        this.#options.counters.count('mqtt.connections.refused', { reason });
        this.#options.logger.warn({ address: from, reason, detail }, 'MQTT packet refused; connection closed');
      },
    });
    this.#aedes.handle(guarded, connection.request);
  }

  /** The client's address as its listener saw it: the socket's peer, or the client behind a trusted proxy. */
  #address(client: Client): string {
    return this.#addresses.get(client.conn) ?? (client.conn as Partial<Socket>).remoteAddress ?? client.req?.socket.remoteAddress ?? '';
  }

  #refuseSocket(protocol: string, reason: Refusal, address: string): void {
    this.#options.counters.count('mqtt.connections.refused', { reason });
    this.#options.logger.warn({ protocol, address, reason }, 'connection refused');
  }

  #admit(client: Client, packet: ConnectPacket): boolean {
    const auth = this.#options.auth;
    if (auth === undefined) return true;
    if (auth.admitConnection(this.#address(client))) {
      this.#sessions.connecting(client, packet);
      return true;
    }
    this.#refuse(client, 'too_many_connections');
    return false;
  }

  /** Resolves with nothing when the client may connect, else with the error aedes sends back. */
  async #authenticate(client: Client, username: string | undefined, password: Buffer | undefined): Promise<(Error & { returnCode: 2 | 3 | 4 | 5 }) | undefined> {
    const auth = this.#options.auth;
    if (auth === undefined) return undefined;
    const certName = this.#certNames.get(client.conn);
    const result =
      certName === undefined
        ? await auth.authenticate(client.id, username, password, this.#address(client))
        : auth.authenticateCertificate(client.id, certName, username);
    if (result.ok) {
      // A client id already connected under another login is refused rather than taken over.
      const holder = aedesInternals(this.#aedes).clients[client.id];
      const held = holder === undefined || holder === client ? undefined : this.#identities.get(holder);
      if (held !== undefined && held.username !== result.identity.username) {
        this.#refuse(client, 'client_id_in_use', username);
        return Object.assign(new Error('client id in use by another login'), { returnCode: 2 as const });
      }
      if (!this.#sessions.admit(client, result.identity)) {
        this.#refuse(client, 'session_of_another_login', username);
        return Object.assign(new Error("client id holds another login's session"), { returnCode: 2 as const });
      }
      this.#identities.set(client, result.identity);
      return undefined;
    }
    this.#refuse(client, result.refusal, username);
    return Object.assign(new Error(`connection refused: ${result.refusal}`), { returnCode: connackReturnCode(result.refusal) });
  }

  /** aedes' authorizeForward: the client's ACL first, then the command tracker. */
  #forward(client: Client, packet: AedesPublishPacket): AedesPublishPacket | null {
    if (this.#options.auth !== undefined && !this.#sessions.mayForward(client, this.#identities.get(client), packet)) return null;
    return this.#commands.forward(client, packet);
  }

  #refuse(client: Client, reason: Refusal, username?: string): void {
    this.#options.counters.count('mqtt.connections.refused', { reason });
    // The password is never logged.
    this.#options.logger.warn({ clientId: client.id, username, address: this.#address(client), reason }, 'connection refused');
  }

  #maySubscribe(client: Client, filter: string): boolean {
    const invalid = invalidFilterWithin(filter, this.#topicLimits());
    if (invalid !== undefined) {
      this.#options.counters.count('mqtt.subscribe.refused', { reason: 'invalid_filter' });
      this.#options.logger.warn({ clientId: client.id, filter, reason: invalid }, 'subscription refused: invalid filter');
      return false;
    }
    const identity = this.#identities.get(client);
    if (this.#options.auth === undefined || (identity !== undefined && maySubscribe(identity, filter))) return true;
    this.#options.counters.count('mqtt.subscribe.refused', { reason: 'acl' });
    this.#options.logger.warn({ clientId: client.id, filter }, 'subscription refused by the ACL');
    this.#sessions.refusedSubscription(client, filter);
    return false;
  }

  #topicLimits(): TopicLimits {
    return this.#options.topicLimits ?? DEFAULT_TOPIC_LIMITS;
  }

  #onPublish(client: Client | null, packet: PublishPacket, callback: (error?: Error | null) => void): void {
    const { counters } = this.#options;
    const invalid = invalidTopicReason(packet.topic, this.#topicLimits());
    if (invalid !== undefined) {
      counters.count('mqtt.publish.refused', { reason: 'invalid_topic' });
      this.#options.logger.warn({ clientId: client?.id, topic: packet.topic.slice(0, 200), reason: invalid }, `publish refused: invalid topic; ${refusalOutcome(client, packet.qos)}`);
      callback(new Error(`invalid topic: ${invalid}`));
      return;
    }
    if (client !== null && packet.topic.startsWith('$') && this.#options.auth === undefined) {
      counters.count('mqtt.publish.refused', { reason: 'reserved_topic' });
      callback(new Error(`publishing to ${packet.topic} is not allowed`));
      return;
    }
    if (client !== null && this.#options.auth !== undefined) {
      const identity = this.#identities.get(client);
      if (identity === undefined || !mayPublish(identity, packet.topic)) {
        counters.count('mqtt.publish.refused', { reason: 'acl' });
        this.#options.logger.warn({ clientId: client.id, topic: packet.topic }, `publish refused by the ACL; ${refusalOutcome(client, packet.qos)}`);
        callback(new Error(`publishing to ${packet.topic} is not allowed`));
        return;
      }
    }
    if (client === null) {
      this.#take(client, packet, callback);
      return;
    }
    const behind = this.#behind.get(client);
    const repeat = packet.qos === 2 && packet.dup;
    if (behind === undefined && !repeat) {
      this.#take(client, packet, callback);
      return;
    }
    // A QoS 2 repeat is looked up before it is taken; the client's later publishes wait behind
    // it, so that the bridges get one device's messages in the order it sent them.
    const run = async () => {
      try {
        if (repeat) await this.#takeUnlessRepeat(client, packet, callback);
        else this.#take(client, packet, callback);
      } catch (error) {
        callback(error instanceof Error ? error : new Error(String(error)));
      }
    };
    const step = (behind ?? Promise.resolve()).then(run);
    this.#behind.set(client, step);
    void step.then(() => {
      if (this.#behind.get(client) === step) this.#behind.delete(client);
    });
  }

  /**
   * A QoS 2 message sent again because its PUBREC was lost: aedes keeps the ones it answered
   * until PUBREL, and answers a repeat with PUBREC alone. The taps saw it already (they sit in
   * the hook that runs before that check), so it goes past them, exactly once as QoS 2 says;
   * but only when the stored one is the same message: a packet id can be left over from a
   * session the device lost, and a new message under it must be taken.
   */
  async #takeUnlessRepeat(client: Client, packet: PublishPacket, callback: (error?: Error | null) => void): Promise<void> {
    let stored: { topic?: string; payload?: unknown } | undefined;
    try {
      stored = (await aedesInternals(this.#aedes).persistence.incomingGetPacket(client, packet)) as typeof stored;
    } catch {
      stored = undefined; // not stored: a message whose first copy never got this far
    }
    if (stored !== undefined && stored.topic === packet.topic && samePayload(stored.payload, packet.payload)) {
      this.#options.counters.count('mqtt.publish.duplicates', { qos: '2' });
      callback(null);
      return;
    }
    this.#take(client, packet, callback);
  }

  /**
   * Answers a message Ferry did not store so that its device sends it again. MQTT 3.1.1 has no
   * negative acknowledgement: aedes closes the connection. For MQTT 5 aedes would answer with
   * PUBACK/PUBREC 0x87 and keep the connection, which a device takes as final: so the
   * connection goes first, with a DISCONNECT saying why, and the refusal reaches aedes only
   * once the connection is down, when nothing it writes reaches the device any more (another
   * refusal of the same connection waits for the same close).
   */
  #refuseUnstored(client: Client, error: Error, reasonCode: number, callback: (error?: Error | null) => void): void {
    if (client.version !== 5) {
      callback(error);
      return;
    }
    if (!client.closed && !this.#disconnecting.has(client)) {
      this.#disconnecting.add(client);
      client.disconnect({ reasonCode, properties: { reasonString: 'message not stored; send it again' } }, () => {});
    }
    const conn = client.conn as unknown as Duplex;
    if (conn.destroyed) callback(error);
    else conn.once('close', () => callback(error));
  }

  /** Hands an accepted publish to the taps whose filters match it. */
  #take(client: Client | null, packet: PublishPacket, callback: (error?: Error | null) => void): void {
    const { counters } = this.#options;
    if (this.#draining && packet.qos > 0 && client !== null) {
      // The bridges are about to stop: a message taken now could be acknowledged unstored.
      counters.count('mqtt.publish.refused', { reason: 'shutting_down' });
      this.#refuseUnstored(client, new Error('gateway shutting down: message not stored'), SERVER_SHUTTING_DOWN, callback);
      return;
    }
    counters.count('mqtt.messages.received', { qos: String(packet.qos) });
    const matching: Tap[] = [];
    for (const tap of this.#taps) {
      for (const filter of tap.filters) {
        if (topicMatches(filter, packet.topic)) {
          matching.push(tap);
          break;
        }
      }
    }
    if (matching.length === 0) {
      callback(null);
      return;
    }
    const { properties } = packet;
    const envelope = createEnvelope({
      topic: packet.topic,
      payload: typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload,
      origin: this.#origin(client, packet.qos, packet.retain),
      ...(properties === undefined ? {} : { headers: propertyHeaders(properties) }),
    });
    this.#inFlight += 1;
    const upstream = createDelivery(envelope, {
      onAck: () => {
        this.#settled();
        callback(null);
      },
      onNack: (error) => {
        this.#settled();
        counters.count('mqtt.publish.nacked');
        this.#options.logger.warn({ topic: packet.topic, clientId: client?.id, err: error }, 'message not taken; closing the device connection unacknowledged so it is sent again');
        if (client === null) callback(error);
        else this.#refuseUnstored(client, error, isFerryError(error, 'MESSAGE_REJECTED') && error.retryable ? QUOTA_EXCEEDED : SERVER_BUSY, callback);
      },
    });
    const deliveries = fanOut(upstream, matching.length);
    matching.forEach((tap, i) => tap.subscriber.next(deliveries[i] as Delivery));
  }

  /**
   * The origin of a client's messages: one object per client, QoS and retain flag, shared by
   * its messages (fewer objects per message, and the buffer keeps its JSON).
   */
  #origin(client: Client | null, qos: 0 | 1 | 2, retain: boolean): Origin {
    if (client === null) return { source: 'mqtt', qos, retain };
    let origins = this.#origins.get(client);
    if (origins === undefined) {
      origins = [];
      this.#origins.set(client, origins);
    }
    const at = qos * 2 + (retain ? 1 : 0);
    if (origins[at] === undefined) {
      const username = this.#identities.get(client)?.username;
      origins[at] = Object.freeze({ source: 'mqtt', qos, retain, clientId: client.id, ...(username === undefined ? {} : { username }) });
    }
    return origins[at];
  }

  #settled(): void {
    this.#inFlight -= 1;
    if (this.#inFlight === 0) this.#drained?.();
  }
}

