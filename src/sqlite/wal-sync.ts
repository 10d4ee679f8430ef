import { closeSync, fdatasync, fdatasyncSync, fsyncSync, openSync, statSync } from 'node:fs';
import { dirname } from 'node:path';

/** The fdatasync a WalSync calls; a test gives one that fails, as a failing disk would. */
export type Fdatasync = (fd: number, done: (error: NodeJS.ErrnoException | null) => void) => void;

/** WAL files whose sync failed in this process, with the error: final until the process restarts. */
const failedFiles = new Map<string, Error>();

/** Why the WAL of `database` cannot be trusted in this process any more, if a sync of it failed. */
export function walSyncFailure(database: string): Error | undefined {
  return failedFiles.get(`${database}-wal`);
}

/**
 * Makes a SQLite database's commits durable off the event loop. The connection commits with
 * `synchronous=NORMAL`: SQLite writes the transaction to the WAL file and returns without an
 * fsync. `after(fn)` then runs `fn` once an fdatasync of the WAL, started after that commit, has
 * returned, on libuv's thread pool while the event loop goes on: what `synchronous=FULL` gives
 * (SQLite's own fsync of the WAL at each commit), with the wait moved off the thread that runs
 * the broker. One fdatasync runs at a time and covers every commit before it started, so the
 * commits made while one runs share the next (a group commit of commits).
 *
 * Why the commits stay durable:
 * - fdatasync flushes the file's pages whatever descriptor wrote them (Linux), and the WAL is
 *   written in order with checksums chained from frame to frame, so recovery after a power cut
 *   keeps every commit up to the last one synced.
 * - Before a checkpoint copies the WAL into the database, SQLite syncs the WAL, and it syncs the
 *   database after (NORMAL does both): a WAL that starts over after a checkpoint overwrites only
 *   frames already synced into the database.
 * - The WAL's directory entry is synced once for each WAL file (SQLite would do it on its first
 *   sync of the file, which NORMAL leaves to the first checkpoint).
 *
 * A failed fdatasync is final: after one, Linux may have dropped the pages it could not write
 * and report the next fdatasync as a success, so nothing synced later can be trusted (as
 * PostgreSQL decided in 2018). Every waiting `fn` and every later one gets the error, and so
 * does a WalSync made for the same file later in the process (a reopened database would read
 * pages from memory that never reached the disk): see `walSyncFailure`.
 */
export class WalSync {
  readonly #path: string;
  readonly #fdatasync: Fdatasync;
  #fd: number | undefined;
  #ino = 0;
  /** Descriptors of a WAL file replaced while a sync could use them, closed once none runs. */
  #retired: number[] = [];
  /** fdatasync calls on the thread pool now. */
  #syncs = 0;
  /** Callbacks whose commits the next fdatasync covers. */
  #waiting: ((error?: Error) => void)[] = [];
  /** Callbacks the running fdatasync covers; undefined while none runs. */
  #running: ((error?: Error) => void)[] | undefined;
  #failure: Error | undefined;

  /** `database`: the database file; its WAL is `<database>-wal`. */
  constructor(database: string, options: { fdatasync?: Fdatasync } = {}) {
    this.#path = `${database}-wal`;
    this.#fdatasync = options.fdatasync ?? fdatasync;
    this.#failure = failedFiles.get(this.#path);
  }

  /** Set once an fdatasync failed. */
  get failure(): Error | undefined {
    return this.#failure;
  }

  /** Runs `fn` once every commit made before this call is on disk (with the error if that failed). */
  after(fn: (error?: Error) => void): void {
    if (this.#failure !== undefined) {
      const failure = this.#failure;
      queueMicrotask(() => fn(failure));
      return;
    }
    this.#waiting.push(fn);
    if (this.#running === undefined) this.#start();
  }

  /**
   * Syncs now, on this thread, and runs every waiting callback: for a close, so that the last
   * commits are acknowledged before the connections that wait for them close.
   */
  flushSync(): void {
    const callbacks = [...(this.#running ?? []), ...this.#waiting];
    this.#running = undefined;
    this.#waiting = [];
    if (callbacks.length === 0 || this.#failure !== undefined) {
      for (const fn of callbacks) fn(this.#failure);
      return;
    }
    try {
      fdatasyncSync(this.#file());
    } catch (error) {
      this.#fail(error, callbacks);
      return;
    }
    for (const fn of callbacks) fn();
  }

  /** Closes the WAL's descriptor (after flushSync; one a sync still uses is closed when it returns). */
  close(): void {
    if (this.#fd !== undefined) this.#retire(this.#fd);
    this.#fd = undefined;
  }

  #start(): void {
    const running = this.#waiting;
    this.#waiting = [];
    this.#running = running;
    let fd: number;
    try {
      fd = this.#file();
    } catch (error) {
      this.#running = undefined;
      this.#fail(error, running);
      return;
    }
    this.#syncs += 1;
    this.#fdatasync(fd, (error) => {
      this.#syncs -= 1;
      if (this.#syncs === 0) for (const retired of this.#retired.splice(0)) closeSync(retired);
      // flushSync took these callbacks meanwhile: it ran them. A failure still counts for later.
      if (this.#running !== running) {
        if (error !== null) this.#failed(error);
        return;
      }
      this.#running = undefined;
      if (error !== null) {
        this.#fail(error, running);
        return;
      }
      for (const fn of running) fn();
      if (this.#waiting.length > 0 && this.#failure === undefined) this.#start();
    });
  }

  /** The descriptor of the WAL file there now; a new file's directory entry is synced first. */
  #file(): number {
    const { ino } = statSync(this.#path);
    if (this.#fd !== undefined && ino === this.#ino) return this.#fd;
    const fd = openSync(this.#path, 'r+');
    try {
      const directory = openSync(dirname(this.#path), 'r');
      try {
        fsyncSync(directory);
      } finally {
        closeSync(directory);
      }
    } catch (error) {
      closeSync(fd);
      throw error;
    }
    if (this.#fd !== undefined) this.#retire(this.#fd);
    this.#fd = fd;
    this.#ino = ino;
    return fd;
  }

  #retire(fd: number): void {
    if (this.#syncs === 0) closeSync(fd);
    else this.#retired.push(fd);
  }

  #fail(error: unknown, callbacks: readonly ((error?: Error) => void)[]): void {
    const failure = this.#failed(error);
    const waiting = this.#waiting;
    this.#waiting = [];
    for (const fn of [...callbacks, ...waiting]) fn(failure);
  }

  /** Records the first failure, for this WalSync and any later one of the same file. */
  #failed(error: unknown): Error {
    this.#failure ??= error instanceof Error ? error : new Error(String(error));
    if (!failedFiles.has(this.#path)) failedFiles.set(this.#path, this.#failure);
    return this.#failure;
  }
}
