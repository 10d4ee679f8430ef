import type Database from 'better-sqlite3';
import { asError } from '../../core/errors.ts';
import type { Synchronous } from '../../sqlite/connection.ts';

/** The part of better-sqlite3's Database that group commit uses. */
export type GroupCommitDatabase = Pick<Database.Database, 'exec' | 'inTransaction' | 'transaction' | 'pragma'>;

/** Writes in one transaction at most; a turn with more commits early, unless its transaction holds a `joined` write. */
const MAX_WRITES = 2000;
/** How long writes nothing waits for may stay uncommitted, gathering more (when no durable write comes first). */
const EAGER_COMMIT_MS = 10;

interface Waiter {
  readonly resolve: () => void;
  readonly reject: (error: Error) => void;
}

/**
 * The embedded broker's writes of one event-loop turn go into one transaction, committed at the
 * end of the turn (one fsync under synchronous=FULL for all of them, as the buffer's group
 * commit does): a commit costs about 0.19 ms on this class of disk, a write inside one about
 * 5 µs (measured with 100-byte rows), and on an SD card the commit is the whole cost.
 *
 * A write is applied at once, inside the open transaction, so that reads on the same connection
 * see it (aedes reads its subscriptions and queues right after writing them). Who must not
 * answer a client before the write is on disk (a SUBACK, a PUBACK) waits for `durable`'s
 * promise, which resolves after the commit at the end of the turn. A write nothing waits for
 * goes through `eager` and is committed with the next durable one, or EAGER_COMMIT_MS later; a
 * transaction of eager writes only commits with synchronous=NORMAL (no fsync): a client's queue
 * sent one message per turn would otherwise cost an fsync per message. A crash may lose eager
 * writes not yet committed, a power cut those since the last durable commit (whose fsync covers
 * every earlier commit in the WAL); callers use `eager` only where that is allowed (a QoS 1
 * packet id or PUBACK lost means the message is sent again).
 *
 * A write that is one step of several that must reach the disk together goes through `joined`:
 * it is not waited for on its own, and the transaction holding it is not committed early, so the
 * write that a later step of the same chain waits for (`durable`, or `settled` when that step has
 * nothing to write) is in the same commit. A QoS 2 message's PUBREC state, its retained message
 * and its copies for persistent sessions are kept that way: in commits of their own, a crash
 * between them left the PUBREC state on disk without the copies, and the device's resend was
 * answered as a duplicate, the message lost for every session.
 *
 * Each write runs in a savepoint: one that throws is undone alone. When SQLite undoes the whole
 * transaction (a full disk, an I/O error) or the commit fails, every write of the turn is lost:
 * their promises reject and `onLost` lets the owner rebuild what it keeps in memory.
 */
export class GroupCommit {
  readonly #db: GroupCommitDatabase;
  readonly #onLost: (error: Error) => void;
  readonly #onFailure: ((error: Error) => void) | undefined;
  readonly #inSavepoint: (write: () => unknown) => unknown;
  readonly #synchronous: Synchronous;
  #waiters: Waiter[] = [];
  #open = false;
  /** The synchronous level of the connection now (set only between transactions). */
  #level: Synchronous;
  #writes = 0;
  /** Set while the open transaction holds a `joined` write: it commits at the end of the turn, not early. */
  #joined = false;
  /**
   * Set for the rest of the turn when SQLite undid a transaction holding `joined` writes: the
   * chains they belong to go on in this turn, and their next step must not be applied or
   * acknowledged without them.
   */
  #joinedLost: Error | undefined;
  #soon: NodeJS.Immediate | undefined;
  #later: NodeJS.Timeout | undefined;
  #closed = false;
  #commits = 0;

  /** `synchronous`: the connection's level, the one durable writes are committed with. `onFailure`: told of every write or commit that throws (a corrupt page, say). */
  constructor(db: GroupCommitDatabase, synchronous: Synchronous, onLost: (error: Error) => void, onFailure?: (error: Error) => void) {
    this.#db = db;
    this.#synchronous = synchronous;
    this.#level = synchronous;
    this.#onLost = onLost;
    this.#onFailure = onFailure;
    // Called inside the open transaction, better-sqlite3 makes this a savepoint.
    this.#inSavepoint = db.transaction((write: () => unknown) => write());
  }

  /** Transactions committed so far. */
  get commits(): number {
    return this.#commits;
  }

  /** Applies `write` now; resolves with its result once the transaction holding it committed. */
  durable<T>(write: () => T): Promise<T> {
    if (this.#joinedLost !== undefined) return Promise.reject(this.#joinedLost);
    let result: T;
    try {
      result = this.#apply(write, true);
    } catch (error) {
      return Promise.reject(asError(error));
    }
    return new Promise<T>((resolve, reject) => this.#waiters.push({ resolve: () => resolve(result), reject }));
  }

  /**
   * Applies `write` now, to be committed at the end of this turn with fsync, and returns its
   * result without waiting: the caller's chain waits for that commit through a later `durable`
   * write or `settled` in the same turn. Throws what the write throws.
   */
  joined<T>(write: () => T): T {
    if (this.#joinedLost !== undefined) throw this.#joinedLost;
    const result = this.#apply(write, true);
    this.#joined = true;
    return result;
  }

  /** Resolves once the transaction holding `joined` writes is committed (at once when none is open); rejects when it fails. */
  settled(): Promise<void> {
    if (this.#joinedLost !== undefined) return Promise.reject(this.#joinedLost);
    if (!this.#open || !this.#joined) return Promise.resolve();
    return new Promise<void>((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  /** Applies `write` now and returns its result; it is committed with the next durable write, or soon after. Throws what the write throws. */
  eager<T>(write: () => T): T {
    return this.#apply(write, false);
  }

  /** Commits the open transaction now. */
  flush(): void {
    clearImmediate(this.#soon);
    clearTimeout(this.#later);
    this.#soon = undefined;
    this.#later = undefined;
    if (!this.#open) return;
    const waiters = this.#waiters;
    this.#waiters = [];
    this.#open = false;
    this.#writes = 0;
    this.#joined = false;
    try {
      this.#db.exec('COMMIT');
    } catch (error) {
      const failure = asError(error);
      this.#onFailure?.(failure);
      // A transaction holding joined writes is committed only after the turn that made them (in
      // setImmediate, or by close): their chains end with their waiters' rejection, none goes on
      // to a step to refuse. Refusing writes here would outlast this turn (the setImmediate that
      // ends the refusal runs in the next loop iteration) and fail other clients' new writes.
      this.#abandon(failure, waiters, false);
      return;
    }
    this.#commits += 1;
    for (const waiter of waiters) waiter.resolve();
  }

  /** Commits what is open; later writes throw. */
  close(): void {
    this.flush();
    this.#closed = true;
  }

  /** Applies `write` in the open transaction (opening one) and schedules its commit: at the end of this turn when `soon`. */
  #apply<T>(write: () => T, soon: boolean): T {
    if (this.#closed) throw new Error('the broker state is closed');
    if (this.#writes >= MAX_WRITES && !this.#joined) this.flush();
    // A durable write cannot join a transaction that will commit without fsync: that one is
    // committed first (cheaply), and a new one begins.
    if (this.#open && soon && this.#level !== this.#synchronous) this.flush();
    if (!this.#open) {
      this.#setLevel(soon ? this.#synchronous : 'normal');
      this.#db.exec('BEGIN IMMEDIATE');
      this.#open = true;
    }
    if (soon) this.#soon ??= setImmediate(() => this.flush());
    else if (this.#soon === undefined) this.#later ??= setTimeout(() => this.flush(), EAGER_COMMIT_MS);
    try {
      const result = this.#inSavepoint(write) as T;
      this.#writes += 1;
      return result;
    } catch (error) {
      this.#onFailure?.(asError(error));
      // SQLite rolled back the whole transaction, not just the savepoint.
      if (!this.#db.inTransaction) {
        const waiters = this.#waiters;
        const joined = this.#joined;
        this.#waiters = [];
        this.#open = false;
        this.#writes = 0;
        this.#joined = false;
        this.#abandon(asError(error), waiters, joined);
      }
      throw error;
    }
  }

  #setLevel(level: Synchronous): void {
    if (level === this.#level) return;
    this.#db.pragma(`synchronous = ${level.toUpperCase()}`);
    this.#level = level;
  }

  #abandon(error: Error, waiters: readonly Waiter[], joined: boolean): void {
    if (this.#db.inTransaction) {
      try {
        this.#db.exec('ROLLBACK');
      } catch {
        // Nothing more to undo.
      }
    }
    if (joined && this.#joinedLost === undefined) {
      this.#joinedLost = error;
      setImmediate(() => {
        this.#joinedLost = undefined;
      });
    }
    this.#onLost(error);
    for (const waiter of waiters) waiter.reject(error);
  }
}
