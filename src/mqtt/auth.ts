import type { Counters } from '../core/component.ts';
import { isLoopbackHost } from '../core/loopback.ts';
import { type Identity, globMatches } from './acl.ts';
import { type LoginGateLimits, DEFAULT_LOGIN_GATE_LIMITS, LoginGate } from './login-gate.ts';
import { verifyPassword, verifyNothing } from './password.ts';
import { WindowLimiter } from './rate-limit.ts';

/** The part of a device profile that decides who may connect and what they may do. */
export interface DeviceAccess {
  readonly name: string;
  readonly clientId: string;
  readonly credentials: readonly { readonly username: string; readonly passwordHash?: string | undefined; readonly clientId: string }[];
  readonly acl: { readonly publish: readonly string[]; readonly subscribe: readonly string[] };
}

export interface AuthOptions {
  readonly profiles: readonly DeviceAccess[];
  readonly allowAnonymous: boolean | 'loopback';
  readonly anonymousAcl: { readonly publish: readonly string[]; readonly subscribe: readonly string[] };
  readonly maxConnectionsPerAddress: number;
  readonly maxAuthFailures: number;
  /** How many password checks may run and wait at once; DEFAULT_LOGIN_GATE_LIMITS when absent. */
  readonly loginChecks?: LoginGateLimits;
  readonly counters: Counters;
}

/** Why a connection was refused; also the counter label. */
export type Refusal =
  | 'invalid_client_id'
  | 'invalid_username'
  | 'anonymous_not_allowed'
  | 'bad_credentials'
  | 'too_many_failures'
  /** As many password checks for this username, or from this address, are under way as may be. */
  | 'too_many_attempts'
  /** Every password check slot is busy and the queue for them is full. */
  | 'server_busy'
  | 'too_many_connections'
  | 'client_id_in_use'
  /** An anonymous client using a client id whose saved session a login owns. */
  | 'session_of_another_login'
  /** More sockets than the listener's maxConnections. */
  | 'listener_full'
  /** A client certificate not signed by the listener's CA (or expired). */
  | 'bad_certificate'
  /** A verified certificate whose CN is no credential's username. */
  | 'unknown_certificate';

export type AuthResult = { ok: true; identity: Identity } | { ok: false; refusal: Refusal };

/**
 * Characters that would let an id or name act as a topic filter or cut a string short, and
 * U+FFFD, which the packet parser puts for ill-formed UTF-8 [MQTT-1.5.4-1].
 */
const FORBIDDEN = /[+#/\u0000\ufffd]/;

/**
 * Decides who may connect: anonymous clients where allowed, else a device whose profile
 * lists its username with a scrypt hash that its password matches and a client id its login
 * may use. Failed logins are limited per (address, credential) — per (address, username) for
 * a username no credential matches —, connection attempts per address, and password checks
 * under way per address, per credential (or unknown username) and in all (see LoginGate).
 */
export class DeviceAuthenticator {
  #options: AuthOptions;
  readonly #failures: WindowLimiter;
  readonly #connects: WindowLimiter;
  readonly #gate: LoginGate;

  constructor(options: AuthOptions) {
    this.#options = options;
    this.#gate = new LoginGate(options.loginChecks ?? DEFAULT_LOGIN_GATE_LIMITS);
    this.#failures = new WindowLimiter({ max: options.maxAuthFailures, windowMs: 60_000, blockMs: 300_000 });
    this.#connects = new WindowLimiter({ max: options.maxConnectionsPerAddress, windowMs: 10_000, blockMs: 10_000 });
  }

  /**
   * Replaces the device profiles and the anonymous access (a config reload). Only logins from
   * now on see them: a connected client keeps the identity and ACL it logged in with until it
   * reconnects.
   */
  updateAccess(access: Pick<AuthOptions, 'profiles' | 'allowAnonymous' | 'anonymousAcl'>): void {
    this.#options = { ...this.#options, ...access };
  }

  /** Called for every new connection, before CONNECT is read. */
  admitConnection(address: string): boolean {
    if (this.#connects.blocked(address)) return false;
    // This attempt is within the limit even when it reaches it; the next one is refused.
    this.#connects.record(address);
    return true;
  }

  async authenticate(clientId: string, username: string | undefined, password: Buffer | undefined, address: string): Promise<AuthResult> {
    if (clientId === '' || FORBIDDEN.test(clientId)) return { ok: false, refusal: 'invalid_client_id' };
    if (username === undefined) {
      const { allowAnonymous, anonymousAcl } = this.#options;
      const allowed = allowAnonymous === true || (allowAnonymous === 'loopback' && isLoopbackHost(address));
      if (!allowed) return { ok: false, refusal: 'anonymous_not_allowed' };
      return { ok: true, identity: { clientId, username, profile: undefined, ...anonymousAcl } };
    }
    if (username === '' || FORBIDDEN.test(username)) return { ok: false, refusal: 'invalid_username' };
    const subjects = this.#subjects(username);
    const keys = subjects.map((subject) => `${address}\u0000${subject}`);
    if (keys.some((key) => this.#failures.blocked(key))) return { ok: false, refusal: 'too_many_failures' };
    const admission = this.#gate.admit(address, subjects);
    if (!admission.ok) return { ok: false, refusal: admission.refusal };
    // A check counts as a failure from the moment it starts, and is taken back if the password
    // was right: parallel guesses cannot all pass the block above before the first one fails.
    for (const key of keys) this.#failures.record(key);
    const secret = password?.toString('utf8') ?? '';
    const identity = await admission.run(() => this.#check(clientId, username, secret));
    if (identity === undefined) return { ok: false, refusal: 'bad_credentials' };
    for (const key of keys) this.#failures.release(key);
    return { ok: true, identity };
  }

  /**
   * What failed logins and password checks under way are counted against: each password
   * credential whose username pattern the username matches, else the username itself. A glob
   * credential (`sensor-*`) is one password shared by many usernames, so counting per username
   * would give every new name (sensor-g0, sensor-g1, ...) fresh guesses at the same hash.
   * A username cannot hold NUL, so the two kinds of key cannot collide.
   */
  #subjects(username: string): string[] {
    const subjects: string[] = [];
    for (const profile of this.#options.profiles) {
      for (const credential of profile.credentials) {
        if (credential.passwordHash === undefined || !globMatches(credential.username, username)) continue;
        subjects.push(`credential\u0000${profile.name}\u0000${credential.username}`);
      }
    }
    return subjects.length > 0 ? subjects : [`username\u0000${username}`];
  }

  /** The identity whose credential the password opens, checking each candidate in turn. */
  async #check(clientId: string, username: string, secret: string): Promise<Identity | undefined> {
    let checked = false;
    for (const profile of this.#options.profiles) {
      if (!globMatches(profile.clientId, clientId)) continue;
      for (const credential of profile.credentials) {
        if (!globMatches(credential.username, username)) continue;
        if (!globMatches(credential.clientId, clientId, { clientId, username })) continue;
        // A login without a password hash connects only with a client certificate.
        if (credential.passwordHash === undefined) continue;
        checked = true;
        if (await verifyPassword(secret, credential.passwordHash)) {
          return { clientId, username, profile: profile.name, ...profile.acl };
        }
      }
    }
    // An unknown username takes as long to refuse as a wrong password: the answer's timing
    // does not tell which usernames exist.
    if (!checked) await verifyNothing(secret);
    return undefined;
  }

  /**
   * A client whose certificate the TLS listener verified: it is the login whose username is
   * the certificate's CN, without a password, under the same client id rules. A username
   * sent along must be that CN.
   */
  authenticateCertificate(clientId: string, commonName: string, username: string | undefined): AuthResult {
    if (clientId === '' || FORBIDDEN.test(clientId)) return { ok: false, refusal: 'invalid_client_id' };
    if (commonName === '' || FORBIDDEN.test(commonName)) return { ok: false, refusal: 'invalid_username' };
    if (username !== undefined && username !== commonName) return { ok: false, refusal: 'bad_credentials' };
    let known = false;
    for (const profile of this.#options.profiles) {
      for (const credential of profile.credentials) {
        if (!globMatches(credential.username, commonName)) continue;
        known = true;
        if (!globMatches(profile.clientId, clientId)) continue;
        if (!globMatches(credential.clientId, clientId, { clientId, username: commonName })) continue;
        return { ok: true, identity: { clientId, username: commonName, profile: profile.name, ...profile.acl } };
      }
    }
    return { ok: false, refusal: known ? 'invalid_client_id' : 'unknown_certificate' };
  }

  /**
   * The identity a login that connected in an earlier run has under the access of now, judged
   * without its password (the broker checks a will carried over from that run with it): an
   * anonymous client's while anonymous clients are allowed (`loopback` included: the address is
   * not kept), else that of the profile it logged in with, while a credential of that profile
   * still lets the username in under the client id. Undefined when it no longer would.
   */
  standingIdentity(clientId: string, username: string | undefined, profileName: string | undefined): Identity | undefined {
    if (username === undefined) {
      const { allowAnonymous, anonymousAcl } = this.#options;
      return allowAnonymous === false ? undefined : { clientId, username, profile: undefined, ...anonymousAcl };
    }
    for (const profile of this.#options.profiles) {
      if (profile.name !== profileName || !globMatches(profile.clientId, clientId)) continue;
      const admitted = profile.credentials.some((c) => globMatches(c.username, username) && globMatches(c.clientId, clientId, { clientId, username }));
      if (admitted) return { clientId, username, profile: profile.name, ...profile.acl };
    }
    return undefined;
  }
}
