import type { Socket } from 'node:net';
import type { Aedes, AedesPublishPacket, Client, ConnectPacket } from 'aedes';
import type { Logger } from 'pino';
import type { Counters } from '../core/component.ts';
import { type TopicLimits, invalidFilterWithin } from '../core/topic.ts';
import { type Identity, maySubscribe } from './acl.ts';
import { aedesInternals, clientInternals } from './aedes-internals.ts';
import type { ClientRefusals } from './client-refusals.ts';
import type { DeviceAuthenticator, Refusal } from './auth.ts';
import type { Connection } from './listeners.ts';
import { SessionGuard } from './session-guard.ts';
import type { SavedOwners } from './session-owners.ts';

export interface DeviceAdmissionOptions {
  readonly logger: Logger;
  readonly counters: Counters;
  /** Who may connect and what they may do; without it every client is let in with no limits. */
  readonly auth: DeviceAuthenticator | undefined;
  /** Longest and deepest filter a client may subscribe to. */
  readonly topicLimits: TopicLimits;
  /** Where sessions' owners are kept across restarts; in memory only when absent. */
  readonly savedOwners?: SavedOwners | undefined;
  /** Where refusals are logged (rate-limited) and counted towards disconnecting their client. */
  readonly refusals: ClientRefusals;
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

/**
 * Who gets into the embedded broker and what they may receive: the embedded broker's aedes
 * hooks for connecting (preConnect, authenticate), subscribing and forwarding call it. It
 * keeps each client's identity, for the ACL and for the origin of its messages, and leaves
 * saved sessions to the SessionGuard (issue 16).
 */
export class DeviceAdmission {
  readonly #aedes: Aedes;
  readonly #options: DeviceAdmissionOptions;
  readonly #identities = new WeakMap<Client, Identity>();
  /** Verified certificate names by connection stream (client.conn). */
  readonly #certNames = new WeakMap<object, string>();
  /** Each connection's client address, as its listener determined it (X-Forwarded-For from a trusted proxy). */
  readonly #addresses = new WeakMap<object, string>();
  readonly #sessions: SessionGuard;

  constructor(aedes: Aedes, options: DeviceAdmissionOptions) {
    this.#aedes = aedes;
    this.#options = options;
    this.#sessions = new SessionGuard(aedes, options.logger, options.counters, options.savedOwners, options.refusals.log);
  }

  /** A new connection from a listener, before aedes reads it: what the listener knows of its peer. */
  opened(connection: Connection): void {
    if (connection.certName !== undefined) this.#certNames.set(connection.stream, connection.certName);
    this.#addresses.set(connection.stream, connection.address);
  }

  /** The identity the client logged in with; undefined without a DeviceAuthenticator or before login. */
  identity(client: Client): Identity | undefined {
    return this.#identities.get(client);
  }

  /** aedes' preConnect: false refuses the connection (too many from its address). */
  admit(client: Client, packet: ConnectPacket): boolean {
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
  async authenticate(client: Client, username: string | undefined, password: Buffer | undefined): Promise<(Error & { returnCode: 2 | 3 | 4 | 5 }) | undefined> {
    const auth = this.#options.auth;
    if (auth === undefined) {
      this.#sessions.loggedIn(client);
      return undefined;
    }
    const certName = this.#certNames.get(client.conn);
    const result =
      certName === undefined ? await auth.authenticate(client.id, username, password, this.#address(client)) : auth.authenticateCertificate(client.id, certName, username);
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
      this.#sessions.loggedIn(client);
      return undefined;
    }
    this.#refuse(client, result.refusal, username);
    return Object.assign(new Error(`connection refused: ${result.refusal}`), { returnCode: connackReturnCode(result.refusal) });
  }

  /** aedes' authorizeSubscribe: a valid filter within the client's ACL, from a connection not being taken over. */
  maySubscribe(client: Client, filter: string): boolean {
    const { counters, refusals } = this.#options;
    if (this.#sessions.takenOver(client)) {
      // Not saved into the session the newer connection has looked up already (SessionGuard.loggedIn).
      counters.count('mqtt.subscribe.refused', { reason: 'taken_over' });
      refusals.refused(client, { reason: 'taken_over', message: 'subscription refused: a newer connection with this client id is taking its session over', detail: { filter } });
      return false;
    }
    const invalid = invalidFilterWithin(filter, this.#options.topicLimits);
    if (invalid !== undefined) {
      counters.count('mqtt.subscribe.refused', { reason: 'invalid_filter' });
      refusals.refused(client, { reason: 'invalid_filter', message: 'subscription refused: invalid filter', detail: { filter: filter.slice(0, 200), detail: invalid } });
      return false;
    }
    const identity = this.#identities.get(client);
    if (this.#options.auth === undefined || (identity !== undefined && maySubscribe(identity, sharedFilter(filter)))) return true;
    counters.count('mqtt.subscribe.refused', { reason: 'acl' });
    // A subscription restored from the client's saved session (after its login, before its
    // CONNACK) is not the client's doing: dropped from the session and logged by the
    // SessionGuard, without counting towards a disconnect. SUBSCRIBEs sent right behind the
    // CONNECT are handled during the login too: those count.
    const restored = clientInternals(client).connecting && !client.clean && identity !== undefined;
    if (!restored) refusals.refused(client, { reason: 'acl', message: 'subscription refused by the ACL', detail: { filter } });
    this.#sessions.refusedSubscription(client, filter);
    return false;
  }

  /**
   * aedes' authorizeUnsubscribe (as patched): false, for a connection being taken over, leaves
   * the filters in the session the newer connection has restored already and holds live.
   */
  mayUnsubscribe(client: Client, filters: readonly string[]): boolean {
    if (!this.#sessions.takenOver(client)) return true;
    this.#options.counters.count('mqtt.unsubscribe.refused', { reason: 'taken_over' });
    const message = 'unsubscribe refused: a newer connection with this client id is taking its session over';
    this.#options.refusals.refused(client, { reason: 'taken_over', message, detail: { filters: filters.slice(0, 10) } });
    return false;
  }

  /** aedes' authorizeForward, first check: false for a message outside the client's ACL. */
  mayForward(client: Client, packet: AedesPublishPacket): boolean {
    return this.#options.auth === undefined || this.#sessions.mayForward(client, this.#identities.get(client), packet);
  }

  /** The client's address as its listener saw it: the socket's peer, or the client behind a trusted proxy. */
  #address(client: Client): string {
    return this.#addresses.get(client.conn) ?? (client.conn as Partial<Socket>).remoteAddress ?? client.req?.socket.remoteAddress ?? '';
  }

  #refuse(client: Client, reason: Refusal, username?: string): void {
    this.#options.counters.count('mqtt.connections.refused', { reason });
    // Logged per address (a refused client may change its id at will). The password is never logged.
    this.#options.refusals.log.refused({ who: { address: this.#address(client) }, reason, message: 'connection refused', detail: { clientId: client.id, username } });
  }
}

/**
 * The topic filter the ACL judges: a shared subscription's (`$share/<group>/<filter>`, MQTT 5
 * §4.8.2, which aedes refuses before asking when malformed) is the part after the group.
 */
function sharedFilter(filter: string): string {
  if (!filter.startsWith('$share/')) return filter;
  return filter.slice(filter.indexOf('/', '$share/'.length) + 1);
}
