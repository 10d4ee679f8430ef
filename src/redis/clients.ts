import { FerryError } from '../core/errors.ts';
import { type RedisConnectionSettings, redactRedisUrl } from './connection-config.ts';

/** The part of ioredis' Redis that Ferry calls. */
export interface IoRedisClient {
  readonly status: string;
  get(key: string): Promise<string | null>;
  set(key: string, value: string, ...args: (string | number)[]): Promise<string | null>;
  del(...keys: string[]): Promise<number>;
  exists(...keys: string[]): Promise<number>;
  incrby(key: string, by: number): Promise<number>;
  pexpire(key: string, ms: number): Promise<number>;
  pttl(key: string): Promise<number>;
  mget(...keys: string[]): Promise<(string | null)[]>;
  hget(key: string, field: string): Promise<string | null>;
  hset(key: string, values: Record<string, string>): Promise<number>;
  hgetall(key: string): Promise<Record<string, string>>;
  hdel(key: string, ...fields: string[]): Promise<number>;
  pipeline(): { mget(...keys: string[]): unknown; hget(key: string, field: string): unknown; exec(): Promise<[Error | null, unknown][] | null> };
  evalsha(sha: string, numKeys: number, ...args: (string | number)[]): Promise<unknown>;
  eval(script: string, numKeys: number, ...args: (string | number)[]): Promise<unknown>;
  on(event: 'connect' | 'ready' | 'error' | 'end' | 'close', listener: (...args: unknown[]) => void): unknown;
  /** Closes the connection; with `reconnect`, ioredis connects again (retryStrategy) and keeps its queued commands. */
  disconnect(reconnect?: boolean): void;
}

export type IoRedisFactory = (settings: RedisConnectionSettings) => IoRedisClient | Promise<IoRedisClient>;

/** ioredis, loaded on first use so that a gateway without Redis does not pay for it. */
const ioredis: IoRedisFactory = async (settings) => {
  const { Redis } = await import('ioredis');
  const client = new Redis(settings.url, {
    commandTimeout: settings.commandTimeoutMs,
    connectTimeout: settings.connectTimeoutMs,
    // offline: fail drops what waits for a connection at the first failed attempt (the first
    // connection included); offline: wait keeps it, bounded by commandTimeout.
    maxRetriesPerRequest: settings.offline === 'fail' ? 0 : null,
    retryStrategy: (attempt) => Math.min(attempt * 200, 2000),
    // Names this process's connections in CLIENT LIST.
    connectionName: `ferry-${process.pid}`,
  });
  // ioredis rejects a command at commandTimeout but keeps it: one waiting for a connection (its
  // offline queue: `offline: wait`, or the first connection taking longer than the timeout) is
  // written once a connection is ready, and one written before the connection closed is written
  // again after the reconnection (autoResendUnfulfilledCommands), however long ago its caller
  // was told that it failed (an INCR the caller retried would count twice). Both go through the
  // instance's sendCommand, which drops a command already settled: one reported as failed before
  // it reached Redis never runs. Pipelines write through their own stream and are left alone (the
  // lookup's reads). A command written to a connection that stays open cannot be taken back: a
  // slow Redis still runs it once it gets to it (docs/handlers.md).
  const send = client.sendCommand.bind(client);
  client.sendCommand = (command, stream) => (command.isSettled && stream === undefined ? command.promise : send(command, stream));
  return client as unknown as IoRedisClient;
};

/**
 * Error replies by which the server refuses this client whatever the key: not ready yet (LOADING,
 * BUSY, MASTERDOWN, TRYAGAIN, CLUSTERDOWN, READONLY), refusing every write (OOM at maxmemory with
 * noeviction, MISCONF after a failed save, NOREPLICAS), refusing the credentials (NOAUTH,
 * WRONGPASS), or not holding the key at all (MOVED, ASK: a Redis Cluster node). Refusing one
 * key's messages for them would refuse every message (a full Redis dead-lettered each one).
 */
const SERVER_REFUSALS = new Set(['LOADING', 'BUSY', 'MASTERDOWN', 'TRYAGAIN', 'CLUSTERDOWN', 'READONLY', 'OOM', 'MISCONF', 'NOREPLICAS', 'NOAUTH', 'WRONGPASS', 'MOVED', 'ASK']);

/**
 * A write refusal met inside a script, as Redis before 7 reports it: wrapped in the script's
 * error, the refusal's own reply after a `-` (`ERR Error running script (call to f_<sha>):
 * @user_script:20: @user_script: 20: -OOM command not allowed when used memory > 'maxmemory'.`).
 * Redis 7 replies with the refusal itself (`OOM command not allowed ...`).
 */
const SCRIPT_REFUSAL = /^ERR Error running script \(call to [^)]*\): .*: -(OOM|MISCONF|READONLY|NOREPLICAS) /;

/**
 * True for an error reply that says Redis will not serve this client now, whatever the key:
 * one of SERVER_REFUSALS (also inside a script's error, from Redis before 7), or NOPERM for a
 * command the ACL forbids (`no permissions to run the 'evalsha' command`), as opposed to NOPERM
 * for a key, which is that key's.
 */
export function isServerRefusal(error: unknown): error is Error {
  if (!(error instanceof Error) || error.name !== 'ReplyError') return false;
  const code = error.message.split(' ', 1)[0] as string;
  return SERVER_REFUSALS.has(code) || (code === 'NOPERM' && /permissions to run the '/.test(error.message)) || SCRIPT_REFUSAL.test(error.message);
}

/**
 * True for an error reply about the command itself (WRONGTYPE, NOPERM for a key, a script's
 * error): Redis answered, and asking again will not help until someone changes the key or the
 * ACL, so it refuses what the command was for, not the whole connection. Server refusals
 * (isServerRefusal) and every other failure (a timeout, a lost connection) mean Redis is
 * unavailable.
 */
export function isCommandError(error: unknown): error is Error {
  return error instanceof Error && error.name === 'ReplyError' && !isServerRefusal(error);
}

/**
 * One Redis client, opened on first use. `run` applies the connection's offline behaviour:
 * while the first connection is being made, commands wait for it (bounded by the command
 * timeout); after that, with `offline: fail`, a command while the connection is down fails at
 * once with an UPSTREAM_UNAVAILABLE FerryError, and with `offline: wait` it waits for the
 * reconnection up to the command timeout.
 */
export class RedisConnection {
  readonly settings: RedisConnectionSettings;
  readonly #factory: IoRedisFactory;
  #client: Promise<IoRedisClient> | undefined;
  /** Set once the first connection attempt finished, either way. */
  #settled = false;
  #lastError: unknown;
  /** Set from Redis refusing the URL's database (SELECT) until a connection selects it. */
  #selectRefused: Error | undefined;
  #closed = false;

  constructor(settings: RedisConnectionSettings, factory: IoRedisFactory = ioredis) {
    this.settings = settings;
    this.#factory = factory;
  }

  /** The URL without its password. */
  get target(): string {
    return redactRedisUrl(this.settings.url);
  }

  /** Runs `command` on the client, or fails at once when the connection is down and `offline` is `fail`. */
  async run<T>(command: (client: IoRedisClient) => Promise<T>): Promise<T> {
    if (this.#closed) throw new FerryError('SHUTDOWN', `Redis ${this.target}: connection closed`);
    const client = await this.#open();
    if (this.#selectRefused !== undefined) {
      throw new FerryError('UPSTREAM_UNAVAILABLE', `Redis ${this.target} refuses the URL's database: ${this.#selectRefused.message}`, {
        retryable: true,
        cause: this.#selectRefused,
      });
    }
    if (client.status !== 'ready' && this.#settled && this.settings.offline === 'fail') {
      const reason = this.#lastError instanceof Error ? `: ${this.#lastError.message}` : '';
      throw new FerryError('UPSTREAM_UNAVAILABLE', `Redis ${this.target} is unreachable (${client.status})${reason}`, { retryable: true });
    }
    try {
      return await command(client);
    } catch (error) {
      // A reply error (WRONGTYPE, a script error) is the command's fault; one refusing the
      // server (OOM, LOADING, WRONGPASS) and anything else (a timeout, the connection lost with
      // the command in flight) mean Redis was not there to serve it.
      if (isServerRefusal(error)) {
        throw new FerryError('UPSTREAM_UNAVAILABLE', `Redis ${this.target} refuses to serve: ${error.message}`, { retryable: true, cause: error });
      }
      if ((error as Error | undefined)?.name === 'ReplyError' || error instanceof FerryError) throw error;
      // ioredis drops a command the connection failed under with "Reached the max retries per
      // request limit", which says nothing of why: the connection's own error (ECONNREFUSED, a
      // DNS failure), reported just before, does.
      const cause = (error as Error | undefined)?.name === 'MaxRetriesPerRequestError' && this.#lastError instanceof Error ? this.#lastError : error;
      throw new FerryError('UPSTREAM_UNAVAILABLE', `Redis ${this.target} is unreachable: ${(cause as Error).message}`, { retryable: true, cause });
    }
  }

  #open(): Promise<IoRedisClient> {
    this.#client ??= Promise.resolve(this.#factory(this.settings)).then((client) => {
      // A connection is ready only once its SELECT went through (see the refusal below).
      client.on('ready', () => {
        this.#settled = true;
        this.#lastError = undefined;
        this.#selectRefused = undefined;
      });
      // Reported by the commands that fail; without a listener ioredis would log each attempt.
      client.on('error', (error) => {
        this.#settled = true;
        this.#lastError = error;
        // ioredis reports a SELECT the server refused (a database beyond its `databases`, an ACL
        // without SELECT) here only, and goes on with database 0: the commands that waited for
        // the connection (offline: wait, or a reconnection) would run as soon as it is ready, on
        // another database than the URL's. Closing it before then (nothing more can be written
        // to it) makes the refusal an outage: ioredis connects again with its backoff and sends
        // the waiting commands once a connection selected the URL's database, or fails them at
        // their timeout.
        if ((error as { command?: { name?: string } } | undefined)?.command?.name === 'select') {
          this.#selectRefused = error as Error;
          client.disconnect(true);
        }
      });
      client.on('close', () => {
        this.#settled = true;
      });
      if (this.#closed) client.disconnect();
      // The first commands would be sent as soon as the connection is ready, whether or not its
      // SELECT went through: with a database in the URL, they wait for the first attempt's end
      // (ready, or an error: bounded by connectTimeoutMs), so that a refused SELECT stops them.
      if (!namesDatabase(this.settings.url)) return client;
      return new Promise<IoRedisClient>((resolve) => {
        const settle = () => resolve(client);
        client.on('ready', settle);
        client.on('error', settle);
        client.on('end', settle);
      });
    });
    return this.#client;
  }

  close(): void {
    this.#closed = true;
    void this.#client?.then((client) => client.disconnect()).catch(() => {});
  }
}

/** True when `url` selects a database other than 0 (`/3`, `?db=3`). */
function namesDatabase(url: string): boolean {
  try {
    const parsed = new URL(url);
    return Number(parsed.pathname.slice(1) || parsed.searchParams.get('db') || 0) !== 0;
  } catch {
    return false;
  }
}

/** A share of a connection: `release` gives it back once; the last share closes it. */
export interface RedisLease {
  readonly connection: RedisConnection;
  release(): void;
}

/**
 * The process's Redis clients, one per distinct connection settings, shared by every rate
 * limit, lookup step and handler naming the same, and closed when the last of them lets go
 * (a shutdown, or a reload that drops the last bridge using it).
 */
export class RedisClients {
  readonly #factory: IoRedisFactory;
  readonly #entries = new Map<string, { users: number; readonly connection: RedisConnection }>();

  constructor(factory: IoRedisFactory = ioredis) {
    this.#factory = factory;
  }

  /** Clients open now (for tests and status). */
  get size(): number {
    return this.#entries.size;
  }

  acquire(settings: RedisConnectionSettings): RedisLease {
    const key = JSON.stringify([settings.url, settings.commandTimeoutMs, settings.connectTimeoutMs, settings.offline]);
    let entry = this.#entries.get(key);
    if (entry === undefined) {
      entry = { users: 0, connection: new RedisConnection(settings, this.#factory) };
      this.#entries.set(key, entry);
    }
    const held = entry;
    held.users += 1;
    let released = false;
    return {
      connection: held.connection,
      release: () => {
        if (released) return;
        released = true;
        held.users -= 1;
        if (held.users > 0) return;
        if (this.#entries.get(key) === held) this.#entries.delete(key);
        held.connection.close();
      },
    };
  }
}

/**
 * The clients of this process. Module state, as the Postgres pools are: sharing connections
 * between bridges is what it is for, and an entry lives only while some component holds it.
 */
export const processRedisClients = new RedisClients();
