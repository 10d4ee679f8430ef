import { createHash } from 'node:crypto';
import { isCommandError } from './clients.ts';

export interface TokenRequest {
  readonly key: string;
  /** Messages waiting under this key. */
  readonly count: number;
}

export interface TokenGrant {
  /** How many of the waiting messages may go now, in order. */
  readonly granted: number;
  /** When some were not granted: milliseconds until the next token. */
  readonly waitMs: number;
  /**
   * Set when Redis refused this key (its key holds another type, the ACL forbids it): nothing
   * was granted or written for it, and asking again will not help until someone fixes the key.
   */
  readonly error?: string;
}

export interface BucketShape {
  readonly messagesPerSecond: number;
  readonly burst: number;
}

/**
 * Takes tokens from many buckets in one call: KEYS are the buckets, ARGV the rate (tokens per
 * ms), the size, the TTL, then one count per key. Each bucket is a hash {t: tokens, ts: ms},
 * refilled from Redis' own clock (TIME), so gateways with skewed clocks share one limit. Returns
 * granted and wait (ms) for each key, flattened; -1 and the key's type for a key that holds
 * something else than a hash. That key is checked before it is touched: a command failing on it
 * would end the script with the writes made for the keys before it kept (a script's writes are
 * not rolled back), and fail every key of the call.
 */
const SCRIPT = `
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local out = {}
for i, key in ipairs(KEYS) do
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'hash' and kind ~= 'none' then
    out[2 * i - 1] = -1
    out[2 * i] = kind
  else
    local want = tonumber(ARGV[3 + i])
    local state = redis.call('HMGET', key, 't', 'ts')
    local tokens = tonumber(state[1]) or burst
    local ts = tonumber(state[2]) or now
    if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate) end
    local granted = math.min(want, math.floor(tokens))
    tokens = tokens - granted
    local wait = 0
    if granted < want then wait = math.ceil((1 - tokens) / rate) end
    redis.call('HSET', key, 't', tostring(tokens), 'ts', tostring(math.max(now, ts)))
    redis.call('PEXPIRE', key, ttl)
    out[2 * i - 1] = granted
    out[2 * i] = wait
  end
end
return out
`;
const SHA = createHash('sha1').update(SCRIPT).digest('hex');

/** Most keys in one script call; more are split over several calls, pipelined on the connection. */
const KEYS_PER_CALL = 500;

/** The part of ioredis the buckets use. */
export interface ScriptingClient {
  evalsha(sha: string, numKeys: number, ...args: (string | number)[]): Promise<unknown>;
  eval(script: string, numKeys: number, ...args: (string | number)[]): Promise<unknown>;
}

/**
 * Token buckets in Redis, shared by every gateway that uses the same keys. One round trip
 * (EVALSHA) decides a whole batch of keys, so the cost is per event-loop turn, not per message.
 */
export class RedisTokenBuckets {
  readonly #client: ScriptingClient;
  readonly #shape: BucketShape;

  constructor(client: ScriptingClient, shape: BucketShape) {
    this.#client = client;
    this.#shape = shape;
  }

  async take(requests: readonly TokenRequest[]): Promise<TokenGrant[]> {
    const calls: Promise<TokenGrant[]>[] = [];
    for (let i = 0; i < requests.length; i += KEYS_PER_CALL) calls.push(this.#call(requests.slice(i, i + KEYS_PER_CALL)));
    return (await Promise.all(calls)).flat();
  }

  async #call(requests: readonly TokenRequest[]): Promise<TokenGrant[]> {
    const { messagesPerSecond, burst } = this.#shape;
    const ttlMs = Math.ceil((burst / messagesPerSecond) * 1000) + 1000;
    const args = [...requests.map((r) => r.key), messagesPerSecond / 1000, burst, ttlMs, ...requests.map((r) => r.count)];
    let reply: unknown;
    try {
      reply = await this.#run(requests.length, args);
    } catch (error) {
      if (!isCommandError(error)) throw error;
      // Redis refused the call for one of its keys (NOPERM for a key the ACL does not allow):
      // each key is asked alone, so that only the refused key's messages are refused. Should
      // the script have failed after writing some keys, those keys are charged twice: the
      // limit errs towards fewer messages, never more.
      if (requests.length > 1) return (await Promise.all(requests.map((request) => this.#call([request])))).flat();
      return [{ granted: 0, waitMs: 0, error: error.message }];
    }
    const flat = reply as (number | string)[];
    return requests.map((_, i) => {
      const granted = Number(flat[2 * i]);
      if (granted < 0) return { granted: 0, waitMs: 0, error: `WRONGTYPE the key holds a ${String(flat[2 * i + 1])}, not a token bucket (a hash)` };
      return { granted, waitMs: Number(flat[2 * i + 1]) };
    });
  }

  async #run(keys: number, args: (string | number)[]): Promise<unknown> {
    try {
      return await this.#client.evalsha(SHA, keys, ...args);
    } catch (error) {
      if (!String((error as Error).message).startsWith('NOSCRIPT')) throw error;
      return await this.#client.eval(SCRIPT, keys, ...args);
    }
  }
}
