import { FerryError, isFerryError } from '../core/errors.ts';
import { type IoRedisClient, type RedisClients, type RedisConnection, type RedisLease, processRedisClients } from './clients.ts';
import type { RedisConnections } from './connection-config.ts';

/** Options of `set` and `setJson`. */
export interface RedisSetOptions {
  /**
   * Expire the key after this many milliseconds (more than 0; a fraction is rounded, up to 1 at
   * least). Leave it out for a key that does not expire: 0, a negative number or a non-number
   * rejects with MESSAGE_INVALID, and nothing is written.
   */
  readonly ttlMs?: number;
  /** Only set the key when it does not exist (SET NX): `set` then returns false when it existed. */
  readonly nx?: boolean;
}

/**
 * A Redis connection declared under `redis:` in gateway.yaml, as a handler uses it
 * (`tools.redis(name)`). Every command returns a promise; a command that fails (Redis
 * unreachable under `offline: fail`, a timeout, a wrong type) rejects with a FerryError
 * naming the connection and the command. Ferry opens the connection on first use, shares it
 * with the bridges naming the same settings, and closes it when the bridge stops.
 *
 * A timeout says that no answer came in time, not that nothing was done: a command already
 * written to the connection runs when Redis gets to it, after its promise rejected. (One that
 * timed out before it was written, waiting for a reconnection, is never sent, nor sent again
 * after a reconnection once its time is up.) Retrying a failed write is therefore at least
 * once: a retried `incr` may count twice. Write idempotently where that matters (set a value
 * computed from the message rather than `incr`; guard with `set(marker, '1', { nx: true })`).
 */
export interface RedisTools {
  /** The connection's name in gateway.yaml. */
  readonly name: string;
  /** The value of `key`, undefined when there is none. */
  get(key: string): Promise<string | undefined>;
  /** Sets `key`; false when `nx` was given and the key existed (nothing was written). */
  set(key: string, value: string, options?: RedisSetOptions): Promise<boolean>;
  /** Deletes keys; returns how many existed. */
  del(...keys: string[]): Promise<number>;
  exists(key: string): Promise<boolean>;
  /** Adds `by` (1 by default) to the integer at `key` (0 when absent) and returns the new value. */
  incr(key: string, by?: number): Promise<number>;
  /** Expires `key` after `ttlMs`; false when there is no such key. */
  expire(key: string, ttlMs: number): Promise<boolean>;
  /** Milliseconds until `key` expires; undefined when it does not exist or never expires. */
  ttl(key: string): Promise<number | undefined>;
  /** The value of `key` parsed as JSON; undefined when there is none. Text that is not JSON rejects. */
  getJson<T = unknown>(key: string): Promise<T | undefined>;
  /**
   * `set` with the value written as JSON text. A value with no JSON text (undefined, a function,
   * a BigInt, a cycle) rejects with MESSAGE_INVALID, and nothing is written.
   */
  setJson(key: string, value: unknown, options?: RedisSetOptions): Promise<boolean>;
  /** One field of the hash at `key`. */
  hget(key: string, field: string): Promise<string | undefined>;
  /** Sets fields of the hash at `key`; returns how many were new (0, sending nothing, for `{}`). */
  hset(key: string, fields: Readonly<Record<string, string>>): Promise<number>;
  /** Every field of the hash at `key` ({} when there is none). */
  hgetall(key: string): Promise<Record<string, string>>;
  /** Deletes fields of the hash at `key`; returns how many existed. */
  hdel(key: string, ...fields: string[]): Promise<number>;
}

/** The part of a RedisConnection the tools use. */
export type ToolsConnection = Pick<RedisConnection, 'run' | 'target'>;

export function redisTools(name: string, connection: ToolsConnection): RedisTools {
  const run = async <T>(command: string, key: string, call: (client: IoRedisClient) => Promise<T>): Promise<T> => {
    try {
      return await connection.run(call);
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      const retryable = isFerryError(error) && error.retryable;
      throw new FerryError(isFerryError(error) ? error.code : 'MESSAGE_INVALID', `redis '${name}' (${connection.target}): ${command} ${key} failed: ${reason}`, {
        component: `redis '${name}'`,
        retryable,
        cause: error,
      });
    }
  };
  const set = async (key: string, value: string, options: RedisSetOptions = {}) => {
    const args: (string | number)[] = [];
    if (options.ttlMs !== undefined) args.push('PX', ttlArgument(name, key, options.ttlMs));
    if (options.nx === true) args.push('NX');
    return (await run('SET', key, (c) => c.set(key, value, ...args))) === 'OK';
  };
  const optional = (value: string | null) => (value === null ? undefined : value);
  return {
    name,
    get: async (key) => optional(await run('GET', key, (c) => c.get(key))),
    set,
    del: (...keys) => (keys.length === 0 ? Promise.resolve(0) : run('DEL', keys.join(' '), (c) => c.del(...keys))),
    exists: async (key) => (await run('EXISTS', key, (c) => c.exists(key))) > 0,
    incr: (key, by = 1) => run('INCRBY', key, (c) => c.incrby(key, by)),
    expire: async (key, ttlMs) => (await run('PEXPIRE', key, (c) => c.pexpire(key, Math.max(1, Math.round(ttlMs))))) === 1,
    ttl: async (key) => {
      const ms = await run('PTTL', key, (c) => c.pttl(key));
      return ms < 0 ? undefined : ms;
    },
    getJson: async <T>(key: string) => {
      const text = await run('GET', key, (c) => c.get(key));
      if (text === null) return undefined;
      try {
        return JSON.parse(text) as T;
      } catch (error) {
        throw new FerryError('MESSAGE_INVALID', `redis '${name}': the value of ${key} is not JSON: ${(error as Error).message}`, { component: `redis '${name}'` });
      }
    },
    setJson: async (key, value, options) => set(key, jsonText(name, key, value), options),
    hget: async (key, field) => optional(await run('HGET', key, (c) => c.hget(key, field))),
    hset: (key, fields) => (Object.keys(fields).length === 0 ? Promise.resolve(0) : run('HSET', key, (c) => c.hset(key, { ...fields }))),
    hgetall: (key) => run('HGETALL', key, (c) => c.hgetall(key)),
    hdel: (key, ...fields) => (fields.length === 0 ? Promise.resolve(0) : run('HDEL', key, (c) => c.hdel(key, ...fields))),
  };
}

/**
 * A `ttlMs` as SET's PX argument. Redis refuses PX 0 and below; a 0 that was turned into 1 ms
 * stored a key that was gone at once, which reads as "no TTL" to the caller who wrote it.
 */
function ttlArgument(name: string, key: string, ttlMs: number): number {
  if (typeof ttlMs === 'number' && Number.isFinite(ttlMs) && ttlMs > 0) return Math.max(1, Math.round(ttlMs));
  const component = `redis '${name}'`;
  throw new FerryError(
    'MESSAGE_INVALID',
    `${component}: SET ${key}: ttlMs must be more than 0 milliseconds (got ${String(ttlMs)}); leave it out for a key that does not expire; nothing was written`,
    {
      component,
    },
  );
}

/**
 * `value` as JSON text. Refused before anything is sent when it has none: `JSON.stringify` gives
 * undefined for undefined or a function (ioredis would write an empty string, which `getJson`
 * then refuses) and throws for a BigInt or a cycle (a throw, not a rejection, out of a method
 * that returns a promise).
 */
function jsonText(name: string, key: string, value: unknown): string {
  const component = `redis '${name}'`;
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (cause) {
    throw new FerryError('MESSAGE_INVALID', `${component}: SET ${key}: the value cannot be written as JSON: ${(cause as Error).message}`, { component, cause });
  }
  if (text === undefined) throw new FerryError('MESSAGE_INVALID', `${component}: SET ${key}: the value (${typeof value}) has no JSON text; nothing was written`, { component });
  return text;
}

/**
 * `redisTools` over a share of a connection, and the way to give it back: once released, these
 * tools reject every command with SHUTDOWN, also while others still share the connection (their
 * commands would otherwise go on working for a holder that let go of it).
 */
export function leasedTools(name: string, lease: RedisLease): { readonly tools: RedisTools; release(): void } {
  const { connection } = lease;
  let released = false;
  const tools = redisTools(name, {
    target: connection.target,
    run: (command) => (released ? Promise.reject(new FerryError('SHUTDOWN', `Redis ${connection.target}: connection closed`)) : connection.run(command)),
  });
  return {
    tools,
    release: () => {
      released = true;
      lease.release();
    },
  };
}

/**
 * The Redis connections one handler bridge uses, by name: each acquired from the shared
 * clients on the first `tools.redis(name)`, all released when the bridge stops.
 */
export class HandlerRedis {
  readonly #bridge: string;
  readonly #connections: RedisConnections;
  readonly #clients: RedisClients;
  readonly #open = new Map<string, ReturnType<typeof leasedTools>>();
  #closed = false;

  constructor(bridge: string, connections: RedisConnections = {}, clients: RedisClients = processRedisClients) {
    this.#bridge = bridge;
    this.#connections = connections;
    this.#clients = clients;
  }

  get(name: string): RedisTools {
    const taken = this.#open.get(name);
    if (taken !== undefined) return taken.tools;
    const settings = Object.hasOwn(this.#connections, name) ? this.#connections[name] : undefined;
    if (settings === undefined) {
      const declared = Object.keys(this.#connections);
      throw new FerryError(
        'CONFIG_INVALID',
        `bridge '${this.#bridge}': tools.redis('${name}'): no such connection under \`redis:\` in gateway.yaml (${declared.length === 0 ? 'none is declared' : `declared: ${declared.join(', ')}`})`,
        { bridge: this.#bridge },
      );
    }
    if (this.#closed) throw new FerryError('SHUTDOWN', `bridge '${this.#bridge}' stopped: tools.redis('${name}') is closed`, { bridge: this.#bridge });
    const open = leasedTools(name, this.#clients.acquire(settings));
    this.#open.set(name, open);
    return open.tools;
  }

  /** Gives back every connection taken; later `get` calls throw. */
  close(): void {
    this.#closed = true;
    for (const open of this.#open.values()) open.release();
    this.#open.clear();
  }
}
