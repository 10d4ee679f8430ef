import type { Identity } from './acl.ts';

/** What a login may do with the session saved under the client id it connects with. */
export type SessionClaim =
  /** No session, or the login's own: it connects as it asked. */
  | 'own'
  /** Another login's session: this one starts clean and the saved one is discarded. */
  | 'fresh'
  /** A login's session wanted by an anonymous client: refused, the session kept for its owner. */
  | 'refuse';

/**
 * The owners kept with persistent sessions on disk (the broker's state, see
 * persistence/session-records.ts), so that a session still belongs to its login after a
 * restart.
 */
export interface SavedOwners {
  /** The owner saved with the client id's session; undefined when none is saved. */
  savedOwner(clientId: string): string | undefined;
  /** Saves `owner` with the client id's persistent session. */
  saveOwner(clientId: string, owner: string): void;
}

/**
 * Who each saved session belongs to (issue 16: an anonymous client connecting with an offline
 * device's client id took its session, its queued commands and its subscriptions). A session
 * belongs to the username that created it; anonymous clients share one owner. Another login
 * allowed that client id by its profile gets a clean session; an anonymous client never
 * touches a login's session, not even to clean it.
 *
 * Claims of this run are in memory; with `saved`, the owner of a session made by an earlier run
 * is read from disk, and each persistent session's owner is written there (issue 17).
 */
export class SessionOwners {
  /**
   * By client id: the owner, the connection that claimed the session last, and whether the owner
   * is saved with the session on disk. Only while the session lasts, and for a session saved on
   * disk only while its connection is open (claim() reads the owner from disk after): a gateway
   * sees thousands of client ids come and go in a month.
   */
  readonly #owners = new Map<string, { readonly owner: string; readonly holder: object; saved: boolean }>();
  readonly #saved: SavedOwners | undefined;

  constructor(saved?: SavedOwners) {
    this.#saved = saved;
  }

  /**
   * Decides the claim of a login connecting on `holder` and, unless refused, records it as the
   * session's owner and latest holder.
   */
  claim(clientId: string, identity: Pick<Identity, 'username'>, holder: object): SessionClaim {
    const owner = ownerOf(identity);
    const saved = this.#owners.get(clientId)?.owner ?? this.#saved?.savedOwner(clientId);
    if (saved !== undefined && saved !== owner && identity.username === undefined) return 'refuse';
    this.#owners.set(clientId, { owner, holder, saved: false });
    return saved === undefined || saved === owner ? 'own' : 'fresh';
  }

  /**
   * The connection `holder` claimed the client id with now holds a persistent session (resumed
   * or new): its owner is saved with it.
   */
  persisted(clientId: string, holder: object): void {
    const claim = this.#owners.get(clientId);
    if (claim === undefined || claim.holder !== holder || this.#saved === undefined) return;
    this.#saved.saveOwner(clientId, claim.owner);
    claim.saved = true;
  }

  /**
   * The connection `holder` claimed the client id with closed. Its claim is forgotten when its
   * session ended with it (`sessionEnded`), or when the owner is saved with the session on disk:
   * the saved session's expiry, which this process may not hear of (an MQTT 3.1.1 session's,
   * see persistence/session-records.ts), removes it there.
   */
  closed(clientId: string, holder: object, sessionEnded: boolean): void {
    const claim = this.#owners.get(clientId);
    if (claim?.holder === holder && (sessionEnded || claim.saved)) this.#owners.delete(clientId);
  }

  /**
   * The session that `holder` claimed ended (a clean session closed, or a saved one expired):
   * nobody owns the client id now, unless a newer connection claimed it meanwhile.
   */
  release(clientId: string, holder: object): void {
    if (this.#owners.get(clientId)?.holder === holder) this.#owners.delete(clientId);
  }

  get size(): number {
    return this.#owners.size;
  }
}

/** The owner key: a username, or the empty string for every anonymous client (no username is empty). */
export function ownerOf(identity: Pick<Identity, 'username'>): string {
  return identity.username ?? '';
}
