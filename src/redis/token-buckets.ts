import { createHash } from 'node:crypto';
import { FerryError } from '../core/errors.ts';
import { steadyNow } from '../core/steady-clock.ts';
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
 * ms), the size, the TTL, the deadline (by Redis' clock, in ms; 0 for none), then one count per
 * key. A call that runs past its deadline (its caller gave up on it: Redis was busy, the network
 * stalled) takes nothing and writes nothing, and returns -2 and Redis' time; any other call
 * returns Redis' time last. Each bucket is a hash {t: tokens, ts: ms},
 * refilled from Redis' own clock (TIME), so gateways with skewed clocks share one limit. A bucket
 * last written at a time Redis' clock has not reached (it was set back, or Redis now runs on a
 * host whose clock is behind) gets no tokens for that call and is stamped with Redis' time, to
 * refill from then on: kept as the bucket's time, it would leave the bucket empty until the clock
 * caught up with it (an hour set back, an hour without tokens). Returns
 * granted and wait (ms) for each key, flattened; -1 and the key's type for a key that holds
 * something else than a hash. That key is checked before it is touched: a command failing on it
 * would end the script with the writes made for the keys before it kept (a script's writes are
 * not rolled back), and fail every key of the call.
 */
const SCRIPT = `
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local deadline = tonumber(ARGV[4])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if deadline > 0 and now > deadline then return {-2, now} end
local out = {}
for i, key in ipairs(KEYS) do
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'hash' and kind ~= 'none' then
    out[2 * i - 1] = -1
    out[2 * i] = kind
  else
    local want = tonumber(ARGV[4 + i])
    local state = redis.call('HMGET', key, 't', 'ts')
    local tokens = tonumber(state[1]) or burst
    local ts = tonumber(state[2]) or now
    if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate) end
    local granted = math.min(want, math.floor(tokens))
    tokens = tokens - granted
    local wait = 0
    if granted < want then wait = math.ceil((1 - tokens) / rate) end
    redis.call('HSET', key, 't', tostring(tokens), 'ts', tostring(now))
    redis.call('PEXPIRE', key, ttl)
    out[2 * i - 1] = granted
    out[2 * i] = wait
  end
end
out[2 * #KEYS + 1] = now
return out
`;
const SHA = createHash('sha1').update(SCRIPT).digest('hex');

/** Most keys in one script call; more are split over several calls, pipelined on the connection. */
const KEYS_PER_CALL = 500;

/**
 * How fast the clocks of this process and of Redis may drift apart (parts per unit), on top of
 * the error of the last measure: 200 ppm, twice what a common quartz drifts.
 */
const DRIFT = 2e-4;

/** The part of ioredis the buckets use. */
export interface ScriptingClient {
  evalsha(sha: string, numKeys: number, ...args: (string | number)[]): Promise<unknown>;
  eval(script: string, numKeys: number, ...args: (string | number)[]): Promise<unknown>;
}

/**
 * Token buckets in Redis, shared by every gateway that uses the same keys. One round trip
 * (EVALSHA) decides a whole batch of keys, so the cost is per event-loop turn, not per message.
 *
 * A call the caller stopped waiting for (`timeoutMs`) still reaches Redis once Redis gets to it:
 * it would take tokens no message uses. So each call carries its deadline by Redis' clock, and
 * past it takes nothing. Redis' clock is known from the replies: each says Redis' time, and the
 * offset to this process' steady clock is taken from the reply with the shortest round trip (its
 * error is half of it, grown by the drift since), or from any reply that disagrees with it by
 * more than both errors (a clock was set). The deadline is sent with that error added, so that
 * a call still waited for is never cut short; until the first reply, calls carry none. A call is
 * waited for until the take's `timeoutMs` since the take began, and each command until the
 * client's `commandTimeoutMs` since it was sent: a command sent again within the take (EVAL
 * after NOSCRIPT, each key alone after a refused key) keeps the take's deadline and gets its own
 * command time, no more. A call Redis finds past its deadline while it is still waited for shows
 * that Redis' clock moved ahead (a deadline is never earlier than the wait's end otherwise): its
 * reply's clock replaces the one known, and the call is sent once more.
 */
export class RedisTokenBuckets {
  readonly #client: ScriptingClient;
  readonly #shape: BucketShape;
  readonly #timeoutMs: number;
  readonly #commandTimeoutMs: number;
  /** Redis' clock minus this process' steady clock, and how far off it may have been when measured. */
  #offset: { ms: number; error: number; at: number } | undefined;

  /**
   * `timeoutMs`: how long the caller waits for a `take`, from its start; `commandTimeoutMs`: how
   * long the client waits for each command, from when it is sent. A call reaching Redis after
   * either takes nothing. Without either, calls carry no deadline.
   */
  constructor(client: ScriptingClient, shape: BucketShape, timeoutMs = Number.POSITIVE_INFINITY, commandTimeoutMs = Number.POSITIVE_INFINITY) {
    this.#client = client;
    this.#shape = shape;
    this.#timeoutMs = timeoutMs;
    this.#commandTimeoutMs = commandTimeoutMs;
  }

  async take(requests: readonly TokenRequest[]): Promise<TokenGrant[]> {
    const started = steadyNow();
    const calls: Promise<TokenGrant[]>[] = [];
    for (let i = 0; i < requests.length; i += KEYS_PER_CALL) calls.push(this.#call(requests.slice(i, i + KEYS_PER_CALL), started));
    return (await Promise.all(calls)).flat();
  }

  /** One script call for `requests`, within the take that began at `started`. */
  async #call(requests: readonly TokenRequest[], started: number, again = false): Promise<TokenGrant[]> {
    const { messagesPerSecond, burst } = this.#shape;
    const ttlMs = Math.ceil((burst / messagesPerSecond) * 1000) + 1000;
    // The arguments of a command sent at `at`: its deadline depends on when it is sent.
    const args = (at: number) => [...requests.map((r) => r.key), messagesPerSecond / 1000, burst, ttlMs, this.#deadline(started, at), ...requests.map((r) => r.count)];
    const sent = steadyNow();
    let reply: unknown;
    try {
      reply = await this.#run(requests.length, args, sent);
    } catch (error) {
      if (!isCommandError(error)) throw error;
      // Redis refused the call for one of its keys (NOPERM for a key the ACL does not allow):
      // each key is asked alone, so that only the refused key's messages are refused. Should
      // the script have failed after writing some keys, those keys are charged twice: the
      // limit errs towards fewer messages, never more.
      if (requests.length > 1) return (await Promise.all(requests.map((request) => this.#call([request], started)))).flat();
      return [{ granted: 0, waitMs: 0, error: error.message }];
    }
    const flat = reply as (number | string)[];
    const received = steadyNow();
    const late = Number(flat[0]) === -2;
    // Past its deadline though still waited for: not a late call but a wrong deadline, Redis'
    // clock having moved ahead of the one learnt (set forward, or Redis restarted on a host whose
    // clock is ahead). This reply's clock is taken, and the call sent once more. Refused, it
    // counted Redis unavailable for a second (failOpen: a second without a limit).
    const wrong = late && received < Math.min(started + this.#timeoutMs, sent + this.#commandTimeoutMs);
    this.#learnClock(sent, received, Number(flat[flat.length - 1]), wrong);
    if (wrong && !again) return this.#call(requests, started, true);
    if (late) {
      throw new FerryError('UPSTREAM_UNAVAILABLE', 'Redis ran the token call after its caller stopped waiting for it: nothing was taken', { retryable: true });
    }
    return requests.map((_, i) => {
      const granted = Number(flat[2 * i]);
      if (granted < 0) return { granted: 0, waitMs: 0, error: `WRONGTYPE the key holds a ${String(flat[2 * i + 1])}, not a token bucket (a hash)` };
      return { granted, waitMs: Number(flat[2 * i + 1]) };
    });
  }

  /**
   * The deadline, by Redis' clock, of a command sent at `sent` for a take that began at `started`:
   * the earlier of the take's end and the command's own timeout. 0 (none) while Redis' clock is
   * not known, or without timeouts.
   */
  #deadline(started: number, sent: number): number {
    const end = Math.min(started + this.#timeoutMs, sent + this.#commandTimeoutMs);
    if (this.#offset === undefined || !Number.isFinite(end)) return 0;
    const { ms, error, at } = this.#offset;
    return Math.ceil(end + ms + error + (end - at) * DRIFT);
  }

  /**
   * Takes Redis' clock from a reply giving `redisNow` to a call sent at `sent` and answered at
   * `received`; with `wrong`, the clock known is wrong (a call was past a deadline it gave while
   * still waited for), replaced by this reply's whatever their errors.
   */
  #learnClock(sent: number, received: number, redisNow: number, wrong = false): void {
    if (!Number.isFinite(redisNow)) return;
    // TIME is read somewhere within the round trip, and cut to the millisecond below.
    const measured = { ms: redisNow + 0.5 - (sent + received) / 2, error: (received - sent) / 2 + 0.5, at: received };
    const known = this.#offset;
    if (known === undefined || wrong) {
      this.#offset = measured;
      return;
    }
    const error = known.error + (received - known.at) * DRIFT;
    if (measured.error <= error || Math.abs(measured.ms - known.ms) > measured.error + error) this.#offset = measured;
  }

  /** EVALSHA sent at `sent`, or EVAL when Redis does not hold the script (its deadline from when it is sent). */
  async #run(keys: number, args: (at: number) => (string | number)[], sent: number): Promise<unknown> {
    try {
      return await this.#client.evalsha(SHA, keys, ...args(sent));
    } catch (error) {
      if (!String((error as Error).message).startsWith('NOSCRIPT')) throw error;
      return await this.#client.eval(SCRIPT, keys, ...args(steadyNow()));
    }
  }
}
