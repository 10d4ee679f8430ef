import type Database from 'better-sqlite3';
import type { WillOwner } from './carried-wills.ts';
import type { GroupCommit } from './group-commit.ts';
import { type StoredPacket, decodePacket } from './packet-codec.ts';
import { steadyNow } from '../../core/steady-clock.ts';

/** aedes' "never expires" Session Expiry Interval (MQTT 3.1.1 persistent sessions get it too). */
const NEVER_EXPIRES = 0xffff_ffff;
/** setTimeout's longest delay; a later deadline is reached in steps. */
const LONGEST_TIMER_MS = 2 ** 31 - 1;
/** Carried-over wills and sessions handled per timer run. */
const BATCH = 200;
/** How soon the timer looks again after a failure. */
const RETRY_MS = 1000;
/** How soon the timer looks again while wills are being published (they keep their deadline until done). */
const PUBLISHING_MS = 50;

/** A connected aedes client, as far as its session's record is concerned. */
export interface SessionClient {
  readonly id: string;
  /** True when the session ends with the connection (MQTT 5: Session Expiry Interval 0). */
  readonly clean: boolean;
  /** Seconds the session outlives its connection; 0xFFFFFFFF for never. */
  readonly sessionExpiryInterval: number;
  /** The MQTT protocol level: 5 for MQTT 5, 4 for 3.1.1, 3 for 3.1. */
  readonly version?: number | undefined;
}

/** What the session records need from the persistence and the broker around them. */
export interface SessionHooks {
  /** True while a client with this id is connected. */
  connected(clientId: string): boolean;
  /** Publishes a will as the broker publishes one (its login's ACL, then authorized, then to subscribers and bridges). */
  publishWill(clientId: string, will: StoredPacket, owner: WillOwner): Promise<void>;
  /** Removes a session's subscriptions, queued messages and QoS 2 state (its record goes separately). */
  wipe(clientId: string): void;
  /** A carried-over will was published (no error), or refused or not published (the error). */
  willDone(clientId: string, error: Error | undefined): void;
  /** A carried-over session reached its expiry and was removed. */
  sessionExpired(clientId: string): void;
  /** Acting on a deadline failed (the database could not be read or written); tried again later. */
  failed(error: Error): void;
  /**
   * Seconds an MQTT 3.1.1 persistent session is kept after its client disconnected (aedes times
   * only MQTT 5 sessions: these are timed here, in this run and across restarts); also given,
   * at startup, to a saved session stored without an expiry (by an earlier version).
   */
  readonly legacyExpirySeconds?: number | undefined;
}

/**
 * The record of each persistent session: the login that owns it (issue 16: a saved session
 * belongs to the username that made it, across restarts too), its MQTT 5 Session Expiry Interval
 * and when its connection ended. aedes times the expiry of sessions and delayed wills in memory;
 * what it was timing when the previous run ended is carried over here from these records: at
 * startup each such session gets its expiry and each stored will its publication time (its Will
 * Delay Interval, within the session's expiry, from when the connection ended, which is the
 * restart for a connection a crash cut), and a timer acts on them.
 */
export class SessionRecords {
  readonly #commit: GroupCommit;
  readonly #hooks: SessionHooks;
  readonly #statements: Record<
    'owner' | 'saveOwner' | 'exists' | 'held' | 'leftover' | 'opened' | 'closed' | 'closedLegacy' | 'delete' | 'dueWills' | 'dropDueWill' | 'expired' | 'next',
    Database.Statement
  >;
  readonly #db: Database.Database;
  readonly #publishing = new Set<string>();
  /** Carried-over wills handled already, whose removal from disk failed: not published twice. */
  readonly #handled = new Set<string>();
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(db: Database.Database, commit: GroupCommit, hooks: SessionHooks) {
    this.#db = db;
    this.#commit = commit;
    this.#hooks = hooks;
    this.#statements = {
      owner: db.prepare('SELECT owner FROM sessions WHERE client_id = ?'),
      saveOwner: db.prepare('INSERT INTO sessions (client_id, owner) VALUES (?, ?) ON CONFLICT (client_id) DO UPDATE SET owner = excluded.owner'),
      exists: db.prepare('SELECT 1 FROM sessions WHERE client_id = ?'),
      held: db.prepare('SELECT 1 FROM sessions WHERE client_id = ? UNION ALL SELECT 1 FROM queue WHERE client_id = ? LIMIT 1'),
      leftover: db.prepare('SELECT 1 FROM queue WHERE client_id = ? UNION ALL SELECT 1 FROM incoming WHERE client_id = ? LIMIT 1'),
      opened: db.prepare(
        `INSERT INTO sessions (client_id, expiry_seconds) VALUES (?, ?)
         ON CONFLICT (client_id) DO UPDATE SET expiry_seconds = excluded.expiry_seconds, disconnected_at = NULL, expires_at = NULL`,
      ),
      closed: db.prepare('UPDATE sessions SET disconnected_at = ?, expiry_seconds = ? WHERE client_id = ?'),
      closedLegacy: db.prepare('UPDATE sessions SET disconnected_at = ?, expiry_seconds = ?, expires_at = ? WHERE client_id = ?'),
      delete: db.prepare('DELETE FROM sessions WHERE client_id = ?'),
      dueWills: db.prepare('SELECT client_id, payload, meta, owner, profile, protocol FROM wills WHERE due_at <= ? ORDER BY due_at LIMIT ?'),
      dropDueWill: db.prepare('DELETE FROM wills WHERE client_id = ? AND due_at IS NOT NULL'),
      expired: db.prepare('SELECT client_id FROM sessions WHERE expires_at <= ? ORDER BY expires_at LIMIT ?'),
      next: db.prepare('SELECT min(at) AS at FROM (SELECT min(due_at) AS at FROM wills UNION ALL SELECT min(expires_at) FROM sessions)'),
    };
  }

  /** The username owning the client id's saved session ('' for anonymous clients); undefined when none is saved or it has no owner. */
  savedOwner(clientId: string): string | undefined {
    const row = this.#statements.owner.get(clientId) as { owner: string | null } | undefined;
    return row?.owner ?? undefined;
  }

  /** Whether the client id has a persistent session (connected or waiting for its client). */
  stored(clientId: string): boolean {
    return this.#statements.exists.get(clientId) !== undefined;
  }

  /**
   * Whether a Clean Start under the client id has something to discard: a session's record, or
   * a queue left without one (by an earlier version's crash). Two key lookups, no write.
   */
  held(clientId: string): boolean {
    return this.#statements.held.get(clientId, clientId) !== undefined;
  }

  /**
   * aedes' question for a connection without Clean Start that has no subscriptions to restore:
   * whether a session is stored under its client id, which it answers as Session Present. When
   * none is, a queue or QoS 2 state left under the id without a record (by an earlier version's
   * crash between a Clean Start's removal of the record and of the queue) is no session the
   * client is told of: it is dropped, on disk before the CONNACK (which waits for this answer),
   * as a Clean Start drops it. Kept, it was sent to a client told Session Present 0.
   */
  resumable(clientId: string): Promise<boolean> {
    // The reads throw here, not in the promise: the caller reports a failed read (reported-reads.ts).
    if (this.stored(clientId)) return Promise.resolve(true);
    if (this.#statements.leftover.get(clientId, clientId) === undefined) return Promise.resolve(false);
    return this.#commit.durable(() => this.#hooks.wipe(clientId)).then(() => false);
  }

  /**
   * A Clean Start discards the client id's session, inside the caller's write: the one its
   * CONNACK waits for. Its record (with its owner), subscriptions, queue and QoS 2 state go; its
   * will goes in the same write (removed or replaced). Left to aedes, the record went up to
   * 10 ms after the CONNACK and the queue only as aedes read it after the CONNACK: a crash then
   * brought back a session its client had been told was gone (Session Present 0), queued
   * messages and all.
   */
  discard(clientId: string): void {
    this.#hooks.wipe(clientId);
    this.#statements.delete.run(clientId);
  }

  /** Records `owner` as the owner of the client id's persistent session. */
  saveOwner(clientId: string, owner: string): void {
    this.#commit.eager(() => this.#statements.saveOwner.run(clientId, owner));
  }

  /** aedes' `client`: the client is connected, its session resumed or started. */
  opened(client: SessionClient): void {
    if (client.clean) {
      this.#forget(client.id);
      return;
    }
    this.#commit.eager(() => this.openedNow(client));
  }

  /**
   * Records a persistent session's client as connected, with `owner` (the login, when logins
   * are on), inside the caller's write: the one that stores or removes its will as it connects,
   * which the CONNACK waits for (aedes' `client` comes just before the CONNACK and is not waited
   * for). Written there only, a session's record was committed up to 10 ms after its CONNACK: a
   * crash then lost a session the client had been told about, and it was told Session Present 0
   * when it came back (a will on disk without its record was taken for a clean session's,
   * published at once after the restart, past its Will Delay Interval); a record without its
   * owner let any login resume it.
   */
  openedNow(client: SessionClient | { readonly id: string }, owner?: string): void {
    // aedes' putWill gets the connecting client; another caller (aedes-persistence's own tests) may pass only an id.
    if (!('clean' in client) || typeof client.sessionExpiryInterval !== 'number' || client.clean) return;
    this.#statements.opened.run(client.id, this.#expirySeconds(client));
    if (owner !== undefined) this.#statements.saveOwner.run(client.id, owner);
  }

  /**
   * As a persistent session's client connects, before its CONNACK: its record, written inside
   * the caller's write (openedNow). True when the session is new (it had no record).
   */
  connecting(client: SessionClient, owner: string | undefined): boolean {
    const created = !this.stored(client.id);
    this.openedNow(client, owner);
    return created;
  }

  /**
   * A client closed while `connecting` was committed, before its CONNACK: aedes did not register
   * it, so no `clientDisconnect` follows. A session it made goes (the client was never told of
   * it); one it resumed waits for its client again, from now. Nothing changes while another
   * connection holds the client id: that one's end decides.
   */
  abandoned(client: SessionClient, created: boolean, now = steadyNow()): void {
    if (this.#hooks.connected(client.id)) return;
    if (created) this.#forget(client.id);
    else this.closed(client, now);
  }

  /**
   * aedes' `clientDisconnect`: a persistent session now waits for its client, for the Session
   * Expiry Interval the client has now (an MQTT 5 DISCONNECT may change it; 0 ends the session).
   */
  closed(client: SessionClient, now = steadyNow()): void {
    if (client.clean || client.sessionExpiryInterval === 0) {
      this.#forget(client.id);
      return;
    }
    const legacy = this.#legacy(client);
    if (legacy === undefined) {
      this.#commit.eager(() => this.#statements.closed.run(now, expirySeconds(client), client.id));
      return;
    }
    this.#commit.eager(() => this.#statements.closedLegacy.run(now, legacy, now + legacy * 1000, client.id));
    // The timer may be set for a later deadline, or for none.
    if (!this.#publishing.size && this.#handled.size === 0) this.#arm(now);
  }

  /** The expiry of an MQTT 3.1.1 session when such sessions are timed here; undefined for an MQTT 5 one. */
  #legacy(client: SessionClient): number | undefined {
    return client.version === 5 ? undefined : this.#hooks.legacyExpirySeconds;
  }

  #expirySeconds(client: SessionClient): number | null {
    return this.#legacy(client) ?? expirySeconds(client);
  }

  /** aedes' `sessionExpired`, or a carried-over session's expiry: the record goes. */
  ended(clientId: string): void {
    this.#forget(clientId);
  }

  /**
   * At startup, before any client connects: every session and will left by the previous run
   * gets its deadline, and the timer that acts on them starts. Returns what was carried over.
   */
  async carryOver(brokerId: string, now = steadyNow()): Promise<{ sessions: number; expiring: number; wills: number }> {
    const counts = await this.#commit.durable(() => {
      // A session whose connection the previous run still had ended with that run.
      this.#db.prepare('UPDATE sessions SET disconnected_at = ? WHERE disconnected_at IS NULL').run(now);
      const legacy = this.#hooks.legacyExpirySeconds;
      if (legacy !== undefined) this.#db.prepare('UPDATE sessions SET expiry_seconds = ? WHERE expiry_seconds IS NULL').run(legacy);
      const expiring = this.#db.prepare('UPDATE sessions SET expires_at = disconnected_at + expiry_seconds * 1000 WHERE expiry_seconds IS NOT NULL').run().changes;
      const sessions = (this.#db.prepare('SELECT count(*) AS n FROM sessions').get() as { n: number }).n;
      const wills = this.#db
        .prepare('SELECT w.client_id, w.meta, s.client_id IS NOT NULL AS persistent, s.expiry_seconds, s.disconnected_at FROM wills w LEFT JOIN sessions s USING (client_id)')
        .all() as { client_id: string; meta: string; persistent: number; expiry_seconds: number | null; disconnected_at: number | null }[];
      const schedule = this.#db.prepare('UPDATE wills SET broker_id = ?, due_at = ? WHERE client_id = ?');
      for (const will of wills) {
        // MQTT 5: the will waits its Will Delay Interval, and no longer than the session lasts.
        const delay = willDelaySeconds(will.meta);
        const sessionSeconds = will.persistent === 0 ? 0 : (will.expiry_seconds ?? Number.POSITIVE_INFINITY);
        // Adopted by this broker, so that aedes' sweep of dead brokers' wills leaves it to the timer.
        schedule.run(brokerId, (will.disconnected_at ?? now) + Math.min(delay, sessionSeconds) * 1000, will.client_id);
      }
      return { sessions, expiring, wills: wills.length };
    });
    // Sessions that expired while the gateway was down end before any client can resume them;
    // wills wait for the timer, when the broker is ready to publish them.
    this.#expireSessions(now);
    this.#arm(now);
    return counts;
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
  }

  #forget(clientId: string): void {
    if (this.#statements.exists.get(clientId) === undefined) return;
    this.#commit.eager(() => this.#statements.delete.run(clientId));
  }

  #dropWill(clientId: string): void {
    try {
      this.#commit.eager(() => this.#statements.dropDueWill.run(clientId));
      this.#handled.delete(clientId);
    } catch (error) {
      this.#hooks.failed(error instanceof Error ? error : new Error(String(error)));
    }
  }

  /** Ends the carried-over sessions whose expiry passed, all of them (at startup there may be many). */
  #expireSessions(now: number): void {
    for (;;) {
      const rows = this.#statements.expired.all(now, BATCH) as { client_id: string }[];
      let ended = 0;
      for (const { client_id: clientId } of rows) {
        // A resumed session has no expiry any more; this one is gone unless the client is back.
        if (this.#hooks.connected(clientId)) continue;
        this.#commit.eager(() => {
          this.#hooks.wipe(clientId);
          this.#statements.delete.run(clientId);
        });
        this.#hooks.sessionExpired(clientId);
        ended += 1;
      }
      if (rows.length < BATCH || ended === 0) return;
    }
  }

  /** Sets the timer for the next carried-over deadline, if any is left, `atLeastMs` from now at the soonest. */
  #arm(now: number, atLeastMs = 0): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#closed) return;
    const next = (this.#statements.next.get() as { at: number | null }).at;
    if (next === null) return;
    this.#timer = setTimeout(() => this.#run(), Math.min(Math.max(atLeastMs, next - now), LONGEST_TIMER_MS));
    this.#timer.unref();
  }

  #run(): void {
    if (this.#closed) return;
    try {
      this.#due();
    } catch (error) {
      this.#hooks.failed(error instanceof Error ? error : new Error(String(error)));
      this.#timer = setTimeout(() => this.#run(), RETRY_MS);
      this.#timer.unref();
    }
  }

  #due(): void {
    const now = steadyNow();
    for (const row of this.#statements.dueWills.all(now, BATCH) as DueWill[]) {
      if (this.#publishing.has(row.client_id)) continue;
      if (this.#handled.has(row.client_id)) {
        this.#dropWill(row.client_id);
        continue;
      }
      this.#publishing.add(row.client_id);
      const will = decodePacket(row.payload, row.meta);
      const done = (error: Error | undefined) => {
        this.#publishing.delete(row.client_id);
        this.#hooks.willDone(row.client_id, error);
        // Published or refused, the will is done with (aedes drops a refused will too).
        this.#handled.add(row.client_id);
        if (!this.#closed) this.#dropWill(row.client_id);
      };
      this.#hooks.publishWill(row.client_id, will, { username: row.owner, profile: row.profile, protocol: row.protocol }).then(
        () => done(undefined),
        (error: unknown) => done(error instanceof Error ? error : new Error(String(error))),
      );
    }
    this.#expireSessions(now);
    this.#arm(now, this.#handled.size > 0 ? RETRY_MS : this.#publishing.size > 0 ? PUBLISHING_MS : 0);
  }
}

/** A will carried over whose time came, as read. */
interface DueWill {
  readonly client_id: string;
  readonly payload: Buffer | string | null;
  readonly meta: string;
  readonly owner: string | null;
  readonly profile: string | null;
  readonly protocol: number | null;
}

/** The session's expiry as stored: seconds, or null for never. */
function expirySeconds(client: SessionClient): number | null {
  return client.sessionExpiryInterval >= NEVER_EXPIRES ? null : client.sessionExpiryInterval;
}

/** The Will Delay Interval of a stored will, 0 when it has none (MQTT 3.1.1). */
function willDelaySeconds(meta: string): number {
  const properties = (JSON.parse(meta) as { properties?: { willDelayInterval?: unknown } }).properties;
  const delay = properties?.willDelayInterval;
  return typeof delay === 'number' && delay > 0 ? delay : 0;
}
