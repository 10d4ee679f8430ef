import type { Client } from 'aedes';
import { asError } from '../../core/errors.ts';
import type { Identity } from '../acl.ts';
import { clientInternals } from '../aedes-internals.ts';
import { ownerOf } from '../session-owners.ts';
import { willOwnerOf } from './carried-wills.ts';
import { reportedRead } from './reported-reads.ts';
import type { GroupCommit } from './group-commit.ts';
import type { ClientRef } from './memory-parts.ts';
import type { StoredPacket } from './packet-codec.ts';
import type { SessionPackets } from './session-packets.ts';
import type { SessionRecords } from './session-records.ts';

export interface ConnectWritesOptions {
  /** Whether the client may publish its will; one it may not is not stored. */
  readonly willAllowed?: ((client: Client, will: StoredPacket) => boolean) | undefined;
  /** The login each client connected with; absent when logins are off. */
  readonly logins?: { readonly identity: (client: Client) => Identity | undefined } | undefined;
  /** A session's record could not be kept up to date after its client left mid-connect. */
  readonly failed: (error: Error) => void;
  /** Told of a read of the state that failed (see SqlitePersistenceOptions). */
  readonly onFailure?: ((error: Error) => void) | undefined;
}

/** The session's writes (a Clean Start's discard, a persistent session's record); `created` is known once they ran. */
interface RecordWrite {
  readonly write: () => void;
  readonly created: () => boolean;
}

/**
 * The writes of aedes' connect sequence at its will step (storeWill: delWill, then putWill when
 * the CONNECT has a will), which the CONNACK waits for. A persistent session's record and its
 * owner go into the same commit as the will's removal or storage, one commit per connect: the
 * client is told about its session only once the session would survive a crash. A Clean Start
 * discards the session stored under its client id in that commit too (told Session Present 0,
 * the client never gets it back). A clean session's connect writes nothing here unless a will
 * or a session of its id is stored (no commit to wait for).
 *
 * The will step comes after aedes looked up the session to restore (none on a Clean Start: it
 * dropped the subscriptions then) and before it takes the client id over from a connection
 * still holding it; that connection's end leaves the session to this one (sqlite-persistence.ts).
 *
 * A client that closed while its connect waited here goes no further: aedes would register it
 * as connected although its close already ran, and nothing would ever unregister it (counted
 * as connected, its session never expiring); aedes stops the same way for a close during
 * authentication.
 */
export class ConnectWrites {
  readonly #commit: GroupCommit;
  readonly #packets: SessionPackets;
  readonly #sessions: SessionRecords;
  readonly #options: ConnectWritesOptions;

  constructor(commit: GroupCommit, packets: SessionPackets, sessions: SessionRecords, options: ConnectWritesOptions) {
    this.#commit = commit;
    this.#packets = packets;
    this.#sessions = sessions;
    this.#options = options;
  }

  /** Stores the will of a connecting client (aedes passes the client), with its session's record; resolves once on disk. */
  putWill(client: ClientRef, will: StoredPacket): Promise<void> {
    const connecting = connectingClient(client);
    const record = connecting === undefined ? undefined : this.#record(connecting);
    // A failure reaches aedes (as a rejection: thrown, nothing would catch it), which ends the connection without a CONNACK.
    const pending = settled(() => {
      if (this.#options.willAllowed !== undefined && !this.#options.willAllowed(client as Client, will)) {
        // The will is not stored; the session's record still is.
        return record === undefined ? Promise.resolve() : this.#commit.durable(record.write);
      }
      const owner = willOwnerOf(this.#options.logins?.identity(client as Client), (client as Client).version);
      return this.#packets.putWill(client, will, owner, record?.write);
    });
    return connecting === undefined ? pending : this.#goOn(connecting, pending, record, 'reject');
  }

  /**
   * Removes the client's will; as a client connects without a will, its session's writes are in
   * the same commit (with a will, putWill comes next and writes them).
   */
  delWill(client: ClientRef): Promise<StoredPacket | undefined> {
    const read = (f: () => Promise<StoredPacket | undefined>) => reportedRead(this.#options.onFailure, f);
    const connecting = connectingClient(client);
    if (connecting === undefined) return read(() => this.#packets.deleteWill(client));
    const record = clientInternals(connecting).will ? undefined : this.#record(connecting);
    // aedes goes on to the CONNACK whatever this promise says, and nothing handles its
    // rejection (the process would exit): on a failure the connection is closed instead.
    return this.#goOn(
      connecting,
      settled(() => read(() => this.#packets.deleteWill(client, record?.write))),
      record,
      'close',
    );
  }

  /**
   * The writes of a connecting client's session: on a Clean Start, the discard of a session
   * stored under its id; for a persistent session, its record and owner. Undefined when there
   * is neither: a clean session's connect with nothing stored pays no commit.
   */
  #record(client: Client): RecordWrite | undefined {
    const discard = clientInternals(client)._cleanStart && this.#sessions.held(client.id);
    if (client.clean && !discard) return undefined;
    const identity = this.#options.logins?.identity(client);
    const owner = identity === undefined ? undefined : ownerOf(identity);
    let created = false;
    return {
      write: () => {
        if (discard) this.#sessions.discard(client.id);
        if (!client.clean) created = this.#sessions.connecting(client, owner);
      },
      created: () => created,
    };
  }

  /** `pending`'s outcome for aedes' connect sequence; never settles when the client closed meanwhile, or when `failure` is 'close' and it failed. */
  #goOn<T>(client: Client, pending: Promise<T>, record: RecordWrite | undefined, failure: 'reject' | 'close'): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      pending.then(
        (value) => {
          if (!client.closed) {
            resolve(value);
            return;
          }
          if (record === undefined) return;
          try {
            this.#sessions.abandoned(client, record.created());
          } catch (error) {
            this.#options.failed(asError(error));
          }
        },
        (error: unknown) => {
          if (failure === 'reject') reject(error);
          // aedes' way to end a client on an error: reported on 'clientError', the connection closed.
          else if (!client.closed) client.emit('error', asError(error));
        },
      );
    });
  }
}

/** `start()`'s promise; a rejected one when it throws. */
function settled<T>(start: () => Promise<T>): Promise<T> {
  try {
    return start();
  } catch (error) {
    return Promise.reject(asError(error));
  }
}

/** The client aedes passes while it connects; undefined for its other calls (a will done with, after the connection: those pass an id). */
function connectingClient(client: ClientRef): Client | undefined {
  return (client as Partial<Client>).connecting === true ? (client as Client) : undefined;
}
