import type { Subscriber } from 'rxjs';
import type { Logger } from 'pino';
import type { Counters } from '../core/component.ts';
import type { Delivery } from '../core/delivery.ts';
import { FerryError, isFerryError } from '../core/errors.ts';
import { queuedStage } from '../core/queued-stage.ts';
import type { DeliveryOperator } from '../core/stream.ts';
import type { RateLimitConfig } from './rate-limit-config.ts';
import { type RedisClients, type RedisLease, processRedisClients } from './clients.ts';
import { isRedisUrl, redactRedisUrl, resolveRedisReference } from './connection-config.ts';
import { RedisTokenBuckets, type TokenGrant, type TokenRequest } from './token-buckets.ts';
import { steadyNow } from '../core/steady-clock.ts';

export interface RateLimitOptions {
  readonly bridge: string;
  readonly config: RateLimitConfig;
  /** The limit a message counts against (the rendered `key` template); throws when a field has no value. */
  readonly keyOf: (delivery: Delivery) => string;
  /**
   * Takes a refused message: `rate_limited` when it is over the limit (`onExceed: reject`),
   * `failed` when no limit can decide it (its key has no value, or Redis refuses its bucket's
   * key, e.g. WRONGTYPE). The reason names the key.
   */
  readonly reject: (delivery: Delivery, reason: string, label: RateLimitRefusal) => void;
  readonly logger: Logger;
  readonly counters: Counters;
  /** Where the Redis client comes from; the process's shared clients by default. */
  readonly clients?: RedisClients;
}

/** Why the limiter refused a message, as the label its counter takes. */
export type RateLimitRefusal = 'rate_limited' | 'failed';

/**
 * A lease not used for this long (between one and two of these) is given up, so that the
 * leases held are those of keys active lately. Not a matter of the limit: a gateway never holds
 * more than one lease per key, however long it keeps it.
 */
const LEASE_IDLE_MS = 60_000;

/** After a failed Redis call, how long messages are decided without Redis before it is tried again. */
const RETRY_MS = 1000;

/**
 * A rate limit shared through Redis. Each gateway leases tokens: when a key's lease runs
 * low, it takes up to `leaseMs` worth of tokens (at most `burst`) from the shared bucket
 * ahead of need, and spends them locally, so that a message within the limit passes at
 * once, without waiting for Redis. Messages that find no token are grouped by key in FIFO
 * queues, and each event-loop turn one script call asks Redis how many of every waiting key's
 * messages may go (and tops up the leases running low). Those pass on in order; the others
 * are refused (`reject`) or wait, unacknowledged, for the time Redis says the next token needs
 * (`delay`). One call is in flight at a time: what arrives meanwhile joins the next one, so
 * busier turns make bigger batches, not more calls.
 *
 * Every token spent was taken from Redis, and a gateway holds at most one lease per key, so
 * over any interval T the gateways sharing a key pass at most burst + rate × T + (gateways ×
 * lease) messages (the bound stated in docs/bridges.md, checked by a test).
 *
 * A message no limit can decide is refused (`failed`), never counted against a shared stand-in
 * key or let through: one whose key template has no value, and one whose bucket Redis refuses
 * (its key holds another type, the ACL forbids it), which is that key's fault, not an outage.
 *
 * When Redis cannot be reached, `failOpen` passes messages through (counted, one warning per
 * outage); otherwise they wait for Redis. Either way at most `maxWaiting` messages wait: more
 * are nacked (their devices send them again later). A connection name that resolves to nothing
 * (CONFIG_INVALID) is no outage: it fails the stream, as no retry would fix it.
 */
export function rateLimit(options: RateLimitOptions): DeliveryOperator {
  return queuedStage((subscriber) => new Limiter(options, subscriber));
}

/** Tokens a gateway took from Redis for one key and has not spent yet. */
interface Lease {
  tokens: number;
  /** Set when a token is spent; a lease not used between two sweeps (a minute apart) is given up. */
  used: boolean;
}

/** The most tokens one gateway holds for one key: `leaseMs` of the rate, at most `burst`, none below one. */
export function leaseSize(config: Pick<RateLimitConfig, 'messagesPerSecond' | 'burst' | 'leaseMs'>): number {
  const burst = config.burst ?? Math.ceil(config.messagesPerSecond);
  return Math.floor(Math.min(burst, (config.messagesPerSecond * config.leaseMs) / 1000));
}

class Limiter {
  readonly #options: RateLimitOptions;
  readonly #out: Subscriber<Delivery>;
  readonly #prefix: string;
  readonly #queues = new Map<string, Delivery[]>();
  /** Keys waiting for tokens under `delay`: not asked again before this time. */
  readonly #notBefore = new Map<string, number>();
  readonly #leases = new Map<string, Lease>();
  /** Keys whose lease ran below half: topped up in the next call. */
  readonly #lowLeases = new Set<string>();
  readonly #leaseSize: number;
  #leasesSweptAt = 0;
  #waiting = 0;
  #busy = false;
  #immediate: NodeJS.Immediate | undefined;
  #timer: NodeJS.Timeout | undefined;
  #redisBlockedUntil = 0;
  #outage = false;
  #closed = false;
  #lease: RedisLease | undefined;
  #buckets: RedisTokenBuckets | undefined;

  constructor(options: RateLimitOptions, out: Subscriber<Delivery>) {
    this.#options = options;
    this.#out = out;
    this.#prefix = options.config.keyPrefix ?? `ferry:ratelimit:${options.bridge}:`;
    this.#leaseSize = leaseSize(options.config);
  }

  add(delivery: Delivery): void {
    const { config, counters, bridge } = this.#options;
    let key: string;
    try {
      key = this.#options.keyOf(delivery);
    } catch (error) {
      // Every message without a value would otherwise share one made-up key's bucket, and
      // devices that have nothing to do with each other would limit each other.
      const why = (error as Error).message.replace(`template '${config.key}': `, '');
      this.#options.reject(delivery, `rate limit key '${config.key}' has no value: ${why}`, 'failed');
      return;
    }
    let queue = this.#queues.get(key);
    if (queue === undefined) {
      // Nothing of this key waits: a token of its lease lets the message through at once.
      const lease = this.#leases.get(key);
      if (lease !== undefined && lease.tokens >= 1) {
        lease.tokens -= 1;
        lease.used = true;
        if (lease.tokens < this.#leaseSize / 2 && !this.#lowLeases.has(key)) {
          this.#lowLeases.add(key);
          this.#schedule();
        }
        this.#out.next(delivery);
        return;
      }
    }
    if (this.#waiting >= config.maxWaiting) {
      counters.count('ratelimit.overflow', { bridge });
      delivery.nack(
        new FerryError('MESSAGE_REJECTED', `rate limit of bridge '${bridge}': ${config.maxWaiting} messages already waiting (maxWaiting)`, { bridge, retryable: true }),
      );
      return;
    }
    if (queue === undefined) {
      queue = [];
      this.#queues.set(key, queue);
    }
    queue.push(delivery);
    this.#waiting += 1;
    this.#schedule();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#immediate !== undefined) clearImmediate(this.#immediate);
    clearTimeout(this.#timer);
    const stopping = new FerryError('SHUTDOWN', 'gateway stopping: message not stored');
    for (const queue of this.#queues.values()) for (const delivery of queue) delivery.nack(stopping);
    this.#queues.clear();
    this.#lease?.release();
  }

  #schedule(): void {
    if (this.#busy || this.#closed || this.#immediate !== undefined || (this.#queues.size === 0 && this.#lowLeases.size === 0)) return;
    const now = steadyNow();
    let earliest = this.#lowLeases.size > 0 ? Math.max(now, this.#redisBlockedUntil) : Number.POSITIVE_INFINITY;
    for (const key of this.#queues.keys()) earliest = Math.min(earliest, this.#notBefore.get(key) ?? 0);
    if (!this.#options.config.failOpen) earliest = Math.max(earliest, this.#redisBlockedUntil);
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (earliest <= now) this.#immediate = setImmediate(() => this.#round());
    else this.#timer = setTimeout(() => this.#schedule(), earliest - now);
  }

  /** Tokens to ask for `key` beyond its waiting messages: what refills its lease. */
  #topUp(key: string): number {
    if (this.#leaseSize === 0) return 0;
    const lease = this.#leases.get(key);
    const held = lease?.tokens ?? 0;
    return Math.max(0, this.#leaseSize - Math.floor(held));
  }

  #round(): void {
    this.#immediate = undefined;
    const now = steadyNow();
    this.#sweepLeases(now);
    const keys: string[] = [];
    const waiting: number[] = [];
    const requests: TokenRequest[] = [];
    for (const [key, queue] of this.#queues) {
      if ((this.#notBefore.get(key) ?? 0) > now) continue;
      keys.push(key);
      waiting.push(queue.length);
      requests.push({ key: this.#prefix + key, count: queue.length + this.#topUp(key) });
    }
    const blocked = now < this.#redisBlockedUntil;
    if (!blocked) {
      for (const key of this.#lowLeases) {
        if (this.#queues.has(key)) continue;
        const count = this.#topUp(key);
        if (count === 0) continue;
        keys.push(key);
        waiting.push(0);
        requests.push({ key: this.#prefix + key, count });
      }
      this.#lowLeases.clear();
    }
    if (requests.length === 0) {
      this.#schedule();
      return;
    }
    if (blocked) {
      this.#unavailable(keys, waiting);
      this.#schedule();
      return;
    }
    this.#busy = true;
    this.#take(requests).then(
      (grants) => {
        this.#busy = false;
        if (this.#closed) return;
        this.#reachable();
        grants.forEach((grant, i) => {
          if (grant.error === undefined) this.#apply(keys[i] as string, waiting[i] as number, grant.granted, grant.waitMs);
          else this.#refuseKey(keys[i] as string, waiting[i] as number, grant.error);
        });
        this.#schedule();
      },
      (error: unknown) => {
        this.#busy = false;
        if (this.#closed) return;
        if (isFerryError(error, 'CONFIG_INVALID')) {
          // No retry can make a connection that is not configured: passing messages unlimited
          // (failOpen) or holding them for ever would hide it. The stream fails, naming it.
          this.#out.error(error);
          return;
        }
        this.#redisBlockedUntil = steadyNow() + RETRY_MS;
        this.#unreachable(error);
        this.#unavailable(keys, waiting);
        this.#schedule();
      },
    );
  }

  #take(requests: readonly TokenRequest[]): Promise<TokenGrant[]> {
    if (this.#buckets === undefined) {
      const { config, bridge } = this.#options;
      const settings = config.connection ?? (isRedisUrl(config.redis) ? resolveRedisReference(config.redis, {}) : undefined);
      if (settings === undefined) {
        return Promise.reject(new FerryError('CONFIG_INVALID', `rate limit of bridge '${bridge}': no Redis connection named '${config.redis}'`, { bridge }));
      }
      const lease = (this.#options.clients ?? processRedisClients).acquire(settings);
      this.#lease = lease;
      const { connection } = lease;
      this.#buckets = new RedisTokenBuckets(
        {
          evalsha: (...args) => connection.run((client) => client.evalsha(...args)),
          eval: (...args) => connection.run((client) => client.eval(...args)),
        },
        { messagesPerSecond: config.messagesPerSecond, burst: config.burst ?? Math.ceil(config.messagesPerSecond) },
        // The limiter gives up on a take at its own timeout, the client on each command at the
        // connection's command timeout: a call reaching Redis after either takes nothing.
        config.timeoutMs,
        settings.commandTimeoutMs,
      );
    }
    return withTimeout(this.#buckets.take(requests), this.#options.config.timeoutMs);
  }

  /**
   * Passes the first `granted` of the `asked` oldest messages of `key`; the rest are refused
   * or wait. Tokens granted beyond them let later messages of the key through, then fill its lease.
   */
  #apply(key: string, asked: number, granted: number, waitMs: number): void {
    const queue = this.#queues.get(key) ?? [];
    const passed = Math.min(granted, asked, queue.length);
    const over = Math.min(asked, queue.length) - passed;
    let spare = granted - passed;
    // Messages that came while Redis was asked (behind the asked ones) use the spare tokens first.
    const extra = over === 0 ? Math.min(spare, queue.length - passed) : 0;
    spare -= extra;
    const pass = queue.splice(0, passed + extra);
    this.#waiting -= pass.length;
    for (const delivery of pass) this.#out.next(delivery);
    if (over > 0) {
      const { config } = this.#options;
      if (config.onExceed === 'reject') {
        const refused = queue.splice(0, over);
        this.#waiting -= refused.length;
        const reason = `rate limited: over ${config.messagesPerSecond} messages/s for key '${key}'`;
        for (const delivery of refused) this.#options.reject(delivery, reason, 'rate_limited');
      } else {
        this.#notBefore.set(key, steadyNow() + Math.max(1, waitMs));
      }
    }
    if (spare > 0) {
      const lease = this.#leases.get(key);
      if (lease === undefined) this.#leases.set(key, { tokens: spare, used: true });
      else lease.tokens += spare;
    }
    if (queue.length === 0) {
      this.#queues.delete(key);
      this.#notBefore.delete(key);
    } else if (over === 0) {
      this.#notBefore.delete(key);
    }
  }

  /** Redis refused `key`'s bucket: its `asked` oldest messages are refused (those after them are asked next time). */
  #refuseKey(key: string, asked: number, error: string): void {
    const queue = this.#queues.get(key) ?? [];
    const refused = queue.splice(0, asked);
    this.#waiting -= refused.length;
    if (queue.length === 0) {
      this.#queues.delete(key);
      this.#notBefore.delete(key);
    }
    const reason = `rate limit: key '${this.#prefix + key}': ${error}`;
    for (const delivery of refused) this.#options.reject(delivery, reason, 'failed');
  }

  /** Forgets expired leases, at most once per lease period, so the map holds only keys active lately. */
  #sweepLeases(now: number): void {
    if (this.#leases.size === 0 || now - this.#leasesSweptAt < LEASE_IDLE_MS) return;
    this.#leasesSweptAt = now;
    for (const [key, lease] of this.#leases) {
      if (lease.used) lease.used = false;
      else this.#leases.delete(key);
    }
  }

  /** Redis could not decide: pass the waiting messages (failOpen) or keep them waiting. */
  #unavailable(keys: readonly string[], waiting: readonly number[]): void {
    if (!this.#options.config.failOpen) return;
    let passed = 0;
    keys.forEach((key, i) => {
      const queue = this.#queues.get(key);
      if (queue === undefined) return;
      const pass = queue.splice(0, waiting[i] as number);
      passed += pass.length;
      for (const delivery of pass) this.#out.next(delivery);
      if (queue.length === 0) this.#queues.delete(key);
    });
    this.#waiting -= passed;
    if (passed > 0) this.#options.counters.count('ratelimit.unavailable', { bridge: this.#options.bridge }, passed);
  }

  #unreachable(error: unknown): void {
    if (this.#outage) return;
    this.#outage = true;
    const { config, logger } = this.#options;
    // The reason in the line itself: "unreachable" and "full" (OOM) call for different fixes.
    const why = error instanceof Error ? error.message : String(error);
    logger.warn(
      { err: error, redis: this.#target() },
      config.failOpen
        ? `rate limit: Redis unavailable (${why}); letting messages through without a limit (failOpen) until it is back`
        : `rate limit: Redis unavailable (${why}); holding messages unacknowledged until it is back (failOpen: false)`,
    );
  }

  #reachable(): void {
    if (!this.#outage) return;
    this.#outage = false;
    this.#options.logger.info({ redis: this.#target() }, 'rate limit: Redis reachable again; limiting messages');
  }

  #target(): string {
    const { config } = this.#options;
    return redactRedisUrl(config.connection?.url ?? config.redis);
  }
}

/** `promise`, or a rejection once `ms` passed. */
function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new FerryError('UPSTREAM_UNAVAILABLE', `Redis did not answer within ${ms} ms`, { retryable: true })), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
