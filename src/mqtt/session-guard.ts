import type { Duplex } from 'node:stream';
import type { Aedes, AedesPublishPacket, Client, ConnectPacket } from 'aedes';
import type { Logger } from 'pino';
import type { Counters } from '../core/component.ts';
import { type Identity, mayReceive } from './acl.ts';
import { aedesInternals, clientInternals } from './aedes-internals.ts';
import { type SavedOwners, SessionOwners } from './session-owners.ts';
import type { RefusalLog } from './refusal-log.ts';

/**
 * Keeps saved sessions with the logins that made them and their contents within the ACL of
 * whoever is connected (issue 16):
 * - a login connecting with another login's client id starts clean (the old session is
 *   discarded, counted and logged); an anonymous client is refused instead;
 * - a subscription restored from a session that the login's ACL no longer allows is dropped
 *   from the session;
 * - no message reaches a client outside its ACL's subscribe patterns, whether it was queued
 *   while the client was away or matched a subscription made under an older ACL;
 * - a connection being taken over by a newer one with its client id adds no subscription to
 *   the session the newer one took, nor removes one from it (`loggedIn`, `takenOver`).
 */
export class SessionGuard {
  readonly #aedes: Aedes;
  readonly #logger: Logger;
  readonly #counters: Counters;
  readonly #owners: SessionOwners;
  readonly #refusalLog: RefusalLog | undefined;
  /** Each connecting client's CONNECT, between preConnect and the end of authentication. */
  readonly #connects = new WeakMap<Client, ConnectPacket>();
  /** Clients told about a refused delivery already (logged once per client). */
  readonly #toldRefused = new WeakSet<Client>();
  /** A connected client whose client id a newer connection logged in with: that connection. */
  readonly #takingOver = new WeakMap<Client, Client>();
  /**
   * By client id, its connections that logged in and whose socket is still open, in the order
   * they logged in: one still connecting when a newer one logs in is not registered, so not
   * marked in #takingOver. An entry leaves as its socket closes (bounded by open connections).
   */
  readonly #loggedIn = new Map<string, Client[]>();

  /** With `savedOwners`, sessions keep their owners across restarts; with `refusalLog`, dropped subscriptions are logged through it. */
  constructor(aedes: Aedes, logger: Logger, counters: Counters, savedOwners?: SavedOwners, refusalLog?: RefusalLog) {
    this.#aedes = aedes;
    this.#refusalLog = refusalLog;
    this.#logger = logger;
    this.#counters = counters;
    this.#owners = new SessionOwners(savedOwners);
    aedes.on('client', (client) => {
      if (client.clean) return;
      try {
        this.#owners.persisted(client.id, client);
      } catch (error) {
        this.#counters.count('mqtt.broker.errors');
        this.#logger.warn({ clientId: client.id, err: error }, "could not save the owner of the client's session");
      }
    });
    aedes.on('clientDisconnect', (client) => this.#owners.closed(client.id, client, client.clean));
    // MQTT 5 sessions that outlived their connection and then expired.
    aedes.on('sessionExpired', (client) => this.#owners.release(client.id, client));
  }

  /** aedes' preConnect: the CONNECT is kept for authentication to read. */
  connecting(client: Client, packet: ConnectPacket): void {
    this.#connects.set(client, packet);
  }

  /**
   * After the login is verified: may it have the session saved under its client id? False
   * when it may not connect at all; a login that may connect but not resume starts clean.
   */
  admit(client: Client, identity: Identity): boolean {
    const packet = this.#connects.get(client);
    this.#connects.delete(client);
    // Closed while its password was checked: aedes goes no further with it, and it claims nothing.
    if (client.closed) return true;
    const claim = this.#owners.claim(client.id, identity, client);
    if (claim === 'refuse') return false;
    if (claim === 'fresh') {
      this.#counters.count('mqtt.sessions.discarded', { reason: 'owner_changed' });
      this.#logger.warn(
        { clientId: client.id, username: identity.username },
        'client id saved a session of another login: this login starts a clean session and the saved one is discarded',
      );
      // aedes reads Clean Start from the CONNECT (session lookup, QoS 2 store) and from the
      // client (queued messages) after authentication: both say "clean" now.
      if (packet !== undefined) packet.clean = true;
      clientInternals(client)._cleanStart = true;
    }
    return true;
  }

  /**
   * The client logged in (with or without logins on): a connection holding its client id is
   * taken over from now on. aedes looks the session up right after, in the same turn, and
   * takes the old connection over only some turns later (once the new one's session writes are
   * committed), while it still handles the old connection's packets: a SUBSCRIBE of the old
   * connection in between was saved into the session the new one had already restored (not
   * subscribed on the new connection, its messages queued for the next one) or discarded (Clean
   * Start: kept in the new session, against MQTT-3.1.2-4).
   */
  loggedIn(client: Client): void {
    const holder = aedesInternals(this.#aedes).clients[client.id];
    if (holder !== undefined && holder !== client) this.#takingOver.set(holder, client);
    // Closed already: it takes nothing over that takenOver() would answer for, and its socket's
    // 'close' may have been emitted (its entry would stay).
    const conn = client.conn as Partial<Duplex>;
    if (client.closed || conn.destroyed === true || typeof conn.once !== 'function') return;
    const id = client.id;
    const open = this.#loggedIn.get(id);
    if (open === undefined) this.#loggedIn.set(id, [client]);
    else open.push(client);
    conn.once('close', () => {
      const left = this.#loggedIn.get(id)?.filter((each) => each !== client) ?? [];
      if (left.length === 0) this.#loggedIn.delete(id);
      else this.#loggedIn.set(id, left);
    });
  }

  /**
   * Whether a newer connection with the client's id logged in and has not closed: this one is
   * being taken over. For a connection that was not registered yet as the newer one logged in
   * (still connecting: aedes then registers it, sends its CONNACK and handles its packets until
   * the newer one's takeover), from its CONNACK on: the subscriptions its own connect restores
   * before it are in memory only, and stay its own if the newer one closes without a takeover.
   */
  takenOver(client: Client): boolean {
    const newer = this.#takingOver.get(client);
    if (newer !== undefined && !newer.closed) return true;
    if (!clientInternals(client).connackSent) return false;
    const open = this.#loggedIn.get(client.id);
    const at = open?.indexOf(client) ?? -1;
    return open !== undefined && at >= 0 && open.slice(at + 1).some((later) => !later.closed);
  }

  /**
   * A subscription the ACL refused. One being restored from the client's saved session is
   * also removed from that session, so that nothing is queued for it any more.
   */
  refusedSubscription(client: Client, filter: string): void {
    if (!clientInternals(client).connecting || client.clean) return;
    this.#counters.count('mqtt.sessions.subscriptions_dropped', { reason: 'acl' });
    const message = "saved subscription no longer allowed by the client's ACL: dropped from its session";
    // A session can hold many: logged once per client and interval when a refusal log is given.
    if (this.#refusalLog === undefined) this.#logger.warn({ clientId: client.id, filter }, message);
    else this.#refusalLog.refused({ who: { clientId: client.id }, reason: 'acl', message, detail: { filter } });
    aedesInternals(this.#aedes)
      .persistence.removeSubscriptions(client, [filter])
      .catch((error: unknown) => this.#logger.warn({ clientId: client.id, filter, err: error }, 'could not drop a saved subscription'));
  }

  /** aedes' authorizeForward, first check: false for a message outside the client's ACL. */
  mayForward(client: Client, identity: Identity | undefined, packet: AedesPublishPacket): boolean {
    if (identity !== undefined && mayReceive(identity, packet.topic)) return true;
    this.#counters.count('mqtt.deliveries.refused', { reason: 'acl' });
    if (!this.#toldRefused.has(client)) {
      this.#toldRefused.add(client);
      this.#logger.warn(
        { clientId: client.id, topic: packet.topic },
        'message not sent to a client whose ACL does not allow its topic (further ones for this connection are counted only)',
      );
    }
    return false;
  }
}
