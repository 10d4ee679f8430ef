import { createHash } from 'node:crypto';

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
}

export interface BucketShape {
  readonly messagesPerSecond: number;
  readonly burst: number;
}

/**
 * Takes tokens from many buckets in one call: KEYS are the buckets, ARGV the rate (tokens per
 * ms), the size, the TTL, then one count per key. Each bucket is a hash {t: tokens, ts: ms},
 * refilled from Redis' own clock (TIME), so gateways with skewed clocks share one limit. Returns
 * granted and wait (ms) for each key, flattened.
 */
const SCRIPT = `
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local out = {}
for i, key in ipairs(KEYS) do
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
      reply = await this.#client.evalsha(SHA, requests.length, ...args);
    } catch (error) {
      if (!String((error as Error).message).startsWith('NOSCRIPT')) throw error;
      reply = await this.#client.eval(SCRIPT, requests.length, ...args);
    }
    const flat = reply as number[];
    return requests.map((_, i) => ({ granted: Number(flat[2 * i]), waitMs: Number(flat[2 * i + 1]) }));
  }
}
