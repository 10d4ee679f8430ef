import type { Aedes, AedesPublishPacket } from 'aedes';
import type { Logger } from 'pino';
import type { Counters } from '../../core/component.ts';
import { FerryError } from '../../core/errors.ts';
import { type Identity, mayPublish } from '../acl.ts';
import type { StateLimit } from '../state-limits.ts';
import type { StoredPacket } from './packet-codec.ts';

/**
 * The login that stored a will, kept with it (table `wills`): a will carried over from an
 * earlier run is checked against what the config of the run that publishes it lets that login
 * publish, not against the config it was stored under.
 */
export interface WillOwner {
  /** The username, '' for an anonymous client; null when logins were off. */
  readonly username: string | null;
  /** The device profile that let the client in; null for an anonymous client or with logins off. */
  readonly profile: string | null;
  /** The client's MQTT version (5, 4, 3); null for a will stored by Ferry's broker state version 3 or older, which kept no login. */
  readonly protocol: number | null;
}

/** The login of a connected client, to store with its will: `identity` is undefined with logins off. */
export function willOwnerOf(identity: Identity | undefined, protocol: number | undefined): WillOwner {
  return { username: identity === undefined ? null : (identity.username ?? ''), profile: identity?.profile ?? null, protocol: protocol ?? 4 };
}

/** The part of DeviceAuthenticator that tells what a login of an earlier run may do now. */
export interface StandingLogins {
  standingIdentity(clientId: string, username: string | undefined, profile: string | undefined): Identity | undefined;
}

export interface CarriedWillsOptions {
  readonly logger: Logger;
  readonly counters: Counters;
  /** The logins of the config of now; absent with logins off (a will may then publish to any topic but a `$` one, as a live one). */
  readonly logins?: StandingLogins | undefined;
  /** The retained limit that retaining this message for the client would go past, or undefined (SqlitePersistence.retainedRefusal). */
  readonly retainedRefusal: (clientId: string, topic: string, payload: unknown) => StateLimit | undefined;
  /** Counts and logs a refusal of a limit on broker state (StateRefusals). */
  readonly refused: (clientId: string, limit: StateLimit, what: string) => void;
}

/**
 * Publishes the wills SessionRecords carries over from an earlier run as aedes publishes a live
 * client's will: through the broker's authorizePublish and on to subscribers and bridges. aedes
 * has no client for such a will, so the checks that a live will passes under its client are made
 * here first, under the config of now: the ACL of the login that stored it (an operator who took
 * away a device's right to publish there, or its credential, and restarted does not get its old
 * will published), and the limits on retained messages, as for its client's retained PUBLISH
 * (MQTT 5: refused; MQTT 3.1.1: published, not retained).
 *
 * A will stored by broker state version 3 or older kept no login: with logins on it is not
 * published (it cannot be checked); with logins off it is, as any will then.
 */
export class CarriedWills {
  readonly #options: CarriedWillsOptions;

  constructor(options: CarriedWillsOptions) {
    this.#options = options;
  }

  /** Resolves once published; rejects with the refusal (a FerryError MESSAGE_REJECTED) or the broker's error. */
  publish(aedes: Aedes, clientId: string, will: StoredPacket, owner: WillOwner): Promise<void> {
    const topic = will.topic ?? '';
    const refusal = this.#refusal(clientId, topic, owner);
    if (refusal !== undefined) {
      this.#options.counters.count('mqtt.publish.refused', { reason: refusal.reason });
      return Promise.reject(new FerryError('MESSAGE_REJECTED', `will of client '${clientId}' on '${topic}' refused: ${refusal.why}`, { topic }));
    }
    if (will['retain'] === true && !this.#retainAllowed(clientId, topic, will, owner)) {
      return Promise.reject(new FerryError('MESSAGE_REJECTED', `retained will of client '${clientId}' on '${topic}' refused: retained message quota exceeded`, { topic }));
    }
    const packet = will as unknown as AedesPublishPacket;
    return new Promise<void>((resolve, reject) => {
      aedes.authorizePublish(null, packet, (refused) => {
        if (refused) reject(refused);
        else aedes.publish(packet, (error) => (error ? reject(error) : resolve()));
      });
    });
  }

  /** The will was published (no error), or refused or not published (the error): counted and logged once. */
  done(clientId: string, error: Error | undefined): void {
    const { counters, logger } = this.#options;
    counters.count('mqtt.wills.carried_over', { result: error === undefined ? 'published' : 'refused' });
    if (error === undefined) logger.info({ clientId }, 'published the will of a client whose connection ended with the previous run');
    else logger.warn({ clientId, err: error }, `the will of a client whose connection ended with the previous run was not published: ${error.message}`);
  }

  /**
   * Why the config of now does not let the will's login publish it, with the `reason` it is
   * counted under (`mqtt.publish.refused`): `acl` also for a login the config no longer has and
   * for a will whose login is not known, which no login of this config may publish for.
   */
  #refusal(clientId: string, topic: string, owner: WillOwner): { reason: 'acl' | 'reserved_topic'; why: string } | undefined {
    const logins = this.#options.logins;
    if (logins === undefined) return topic.startsWith('$') ? { reason: 'reserved_topic', why: 'a `$` topic' } : undefined;
    if (owner.protocol === null) return { reason: 'acl', why: 'stored by an earlier version without its login, it cannot be checked against the ACL' };
    if (owner.username === null) return { reason: 'acl', why: 'stored while logins were off, it has no login to check against the ACL' };
    const username = owner.username === '' ? undefined : owner.username;
    const identity = logins.standingIdentity(clientId, username, owner.profile ?? undefined);
    const who = username === undefined ? 'anonymous clients' : `login '${username}' (profile '${owner.profile ?? ''}')`;
    if (identity === undefined) return { reason: 'acl', why: `${who} may no longer connect under this client id` };
    if (!mayPublish(identity, topic)) return { reason: 'acl', why: `the ACL of ${who} no longer allows the topic` };
    return undefined;
  }

  /** The limits on retained messages, as for the client's retained PUBLISH; false when the will is refused, its retain flag cleared when published unretained. */
  #retainAllowed(clientId: string, topic: string, will: StoredPacket, owner: WillOwner): boolean {
    const limit = this.#options.retainedRefusal(clientId, topic, will.payload);
    if (limit === undefined) return true;
    if (owner.protocol === 5) {
      this.#options.refused(clientId, limit, `retained will on '${topic.slice(0, 200)}' carried over from the previous run refused, as its client's retained PUBLISH would be`);
      return false;
    }
    // MQTT 3.1.1 (and a will whose version is not known): as a retained PUBLISH, which has no negative PUBACK.
    this.#options.refused(clientId, limit, `retained will on '${topic.slice(0, 200)}' carried over from the previous run published as an ordinary message, not retained`);
    will['retain'] = false;
    return true;
  }
}
