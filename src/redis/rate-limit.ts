import { Observable, type Subscriber } from 'rxjs';
import type { Logger } from 'pino';
import type { Counters } from '../core/component.ts';
import type { Delivery } from '../core/delivery.ts';
import { FerryError } from '../core/errors.ts';
import type { DeliveryOperator } from '../core/stream.ts';
import type { RateLimitConfig } from './rate-limit-config.ts';
import { RedisTokenBuckets, type ScriptingClient, type TokenGrant, type TokenRequest } from './token-buckets.ts';

/** A Redis connection as the limiter uses it; ioredis' Redis fits. */
export interface RateLimitRedis extends ScriptingClient {
  on(event: 'ready' | 'error', listener: (...args: unknown[]) => void): unknown;
  disconnect(): void;
}

export interface RateLimitOptions {
  readonly bridge: string;
  readonly config: RateLimitConfig;
  /** The limit a message counts against (the rendered `key` template). */
  readonly keyOf: (delivery: Delivery) => string;
  /** Takes a message refused for being over the limit (`onExceed: reject`). */
  readonly reject: (delivery: Delivery, reason: string) => void;
  readonly logger: Logger;
  readonly counters: Counters;
  /** Opens the Redis connection; ioredis, imported on first use, by default. */
  readonly connect?: (config: RateLimitConfig) => RateLimitRedis;
}

/** After a failed Redis call, how long messages are decided without Redis before it is tried again. */
const RETRY_MS = 1000;

/**
 * A rate limit shared through Redis: messages are grouped by key in FIFO queues, and each
 * event-loop turn one script call asks Redis how many of every waiting key's messages may
 * go. Those pass on in order; the others are refused (`reject`) or wait, unacknowledged, for
 * the time Redis says the next token needs (`delay`). One call is in flight at a time: what
 * arrives meanwhile joins the next one, so busier turns make bigger batches, not more calls.
 *
 * When Redis cannot be reached, `failOpen` passes messages through (counted, one warning per
 * outage); otherwise they wait for Redis. Either way at most `maxWaiting` messages wait: more
 * are nacked (their devices send them again later).
 */
export function rateLimit(options: RateLimitOptions): DeliveryOperator {
  return (source) =>
    new Observable<Delivery>((subscriber) => {
      const limiter = new Limiter(options, subscriber);
      const subscription = source.subscribe({
        next: (delivery) => limiter.add(delivery),
        error: (error: unknown) => {
          limiter.close();
          subscriber.error(error);
        },
        complete: () => {
          limiter.close();
          subscriber.complete();
        },
      });
      return () => {
        subscription.unsubscribe();
        limiter.close();
      };
    });
}

class Limiter {
  readonly #options: RateLimitOptions;
  readonly #out: Subscriber<Delivery>;
  readonly #prefix: string;
  readonly #queues = new Map<string, Delivery[]>();
  /** Keys waiting for tokens under `delay`: not asked again before this time. */
  readonly #notBefore = new Map<string, number>();
  #waiting = 0;
  #busy = false;
  #immediate: NodeJS.Immediate | undefined;
  #timer: NodeJS.Timeout | undefined;
  #redisBlockedUntil = 0;
  #outage = false;
  #closed = false;
  #redis: RateLimitRedis | undefined;
  #buckets: RedisTokenBuckets | undefined;

  constructor(options: RateLimitOptions, out: Subscriber<Delivery>) {
    this.#options = options;
    this.#out = out;
    this.#prefix = options.config.keyPrefix ?? `ferry:ratelimit:${options.bridge}:`;
  }

  add(delivery: Delivery): void {
    const { config, counters, bridge } = this.#options;
    if (this.#waiting >= config.maxWaiting) {
      counters.count('ratelimit.overflow', { bridge });
      delivery.nack(
        new FerryError('MESSAGE_REJECTED', `rate limit of bridge '${bridge}': ${config.maxWaiting} messages already waiting (maxWaiting)`, { bridge, retryable: true }),
      );
      return;
    }
    const key = this.#options.keyOf(delivery);
    let queue = this.#queues.get(key);
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
    this.#redis?.disconnect();
  }

  #schedule(): void {
    if (this.#busy || this.#closed || this.#immediate !== undefined || this.#queues.size === 0) return;
    const now = Date.now();
    let earliest = Number.POSITIVE_INFINITY;
    for (const key of this.#queues.keys()) earliest = Math.min(earliest, this.#notBefore.get(key) ?? 0);
    if (!this.#options.config.failOpen) earliest = Math.max(earliest, this.#redisBlockedUntil);
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (earliest <= now) this.#immediate = setImmediate(() => this.#round());
    else this.#timer = setTimeout(() => this.#schedule(), earliest - now);
  }

  #round(): void {
    this.#immediate = undefined;
    const now = Date.now();
    const keys: string[] = [];
    const requests: TokenRequest[] = [];
    for (const [key, queue] of this.#queues) {
      if ((this.#notBefore.get(key) ?? 0) > now) continue;
      keys.push(key);
      requests.push({ key: this.#prefix + key, count: queue.length });
    }
    if (requests.length === 0) {
      this.#schedule();
      return;
    }
    if (now < this.#redisBlockedUntil) {
      this.#unavailable(keys, requests);
      this.#schedule();
      return;
    }
    this.#busy = true;
    this.#take(requests).then(
      (grants) => {
        this.#busy = false;
        if (this.#closed) return;
        this.#reachable();
        grants.forEach((grant, i) => this.#apply(keys[i] as string, requests[i] as TokenRequest, grant.granted, grant.waitMs));
        this.#schedule();
      },
      (error: unknown) => {
        this.#busy = false;
        if (this.#closed) return;
        this.#redisBlockedUntil = Date.now() + RETRY_MS;
        this.#unreachable(error);
        this.#unavailable(keys, requests);
        this.#schedule();
      },
    );
  }

  #take(requests: readonly TokenRequest[]): Promise<TokenGrant[]> {
    if (this.#buckets === undefined) {
      const { config } = this.#options;
      this.#redis = (this.#options.connect ?? connectIoredis)(config);
      this.#redis.on('error', () => {
        // Reported through the failed calls (one warning per outage), not per reconnect attempt.
      });
      this.#redis.on('ready', () => {
        this.#redisBlockedUntil = 0;
      });
      this.#buckets = new RedisTokenBuckets(this.#redis, { messagesPerSecond: config.messagesPerSecond, burst: config.burst ?? Math.ceil(config.messagesPerSecond) });
    }
    return this.#buckets.take(requests);
  }

  /** Passes the first `granted` of the `asked` oldest messages of `key`; the rest are refused or wait. */
  #apply(key: string, request: TokenRequest, granted: number, waitMs: number): void {
    const queue = this.#queues.get(key);
    if (queue === undefined) return;
    const asked = Math.min(request.count, queue.length);
    const pass = queue.splice(0, Math.min(granted, asked));
    this.#waiting -= pass.length;
    for (const delivery of pass) this.#out.next(delivery);
    const over = asked - pass.length;
    if (over > 0) {
      const { config } = this.#options;
      if (config.onExceed === 'reject') {
        const refused = queue.splice(0, over);
        this.#waiting -= refused.length;
        const reason = `rate limited: over ${config.messagesPerSecond} messages/s for key '${key}'`;
        for (const delivery of refused) this.#options.reject(delivery, reason);
      } else {
        this.#notBefore.set(key, Date.now() + Math.max(1, waitMs));
      }
    }
    if (queue.length === 0) {
      this.#queues.delete(key);
      this.#notBefore.delete(key);
    } else if (over === 0) {
      this.#notBefore.delete(key);
    }
  }

  /** Redis could not decide: pass the messages (failOpen) or keep them waiting. */
  #unavailable(keys: readonly string[], requests: readonly TokenRequest[]): void {
    if (!this.#options.config.failOpen) return;
    let passed = 0;
    keys.forEach((key, i) => {
      const queue = this.#queues.get(key);
      if (queue === undefined) return;
      const pass = queue.splice(0, (requests[i] as TokenRequest).count);
      passed += pass.length;
      for (const delivery of pass) this.#out.next(delivery);
      if (queue.length === 0) this.#queues.delete(key);
    });
    this.#waiting -= passed;
    this.#options.counters.count('ratelimit.unavailable', { bridge: this.#options.bridge }, passed);
  }

  #unreachable(error: unknown): void {
    if (this.#outage) return;
    this.#outage = true;
    const { config, logger } = this.#options;
    logger.warn(
      { err: error, redis: redactUrl(config.redis) },
      config.failOpen
        ? 'rate limit: Redis unreachable; letting messages through without a limit (failOpen) until it is back'
        : 'rate limit: Redis unreachable; holding messages unacknowledged until it is back (failOpen: false)',
    );
  }

  #reachable(): void {
    if (!this.#outage) return;
    this.#outage = false;
    this.#options.logger.info({ redis: redactUrl(this.#options.config.redis) }, 'rate limit: Redis reachable again; limiting messages');
  }
}

function connectIoredis(config: RateLimitConfig): RateLimitRedis {
  // ioredis is loaded on the first decision, so gateways without a rate limit never load it.
  let client: RateLimitRedis | undefined;
  const listeners: ['ready' | 'error', (...args: unknown[]) => void][] = [];
  const ready = import('ioredis').then(({ Redis }) => {
    client = new Redis(config.redis, {
      commandTimeout: config.timeoutMs,
      connectTimeout: config.timeoutMs,
      maxRetriesPerRequest: 1,
      retryStrategy: (attempt) => Math.min(attempt * 200, 2000),
    }) as unknown as RateLimitRedis;
    for (const [event, listener] of listeners) client.on(event, listener);
    return client;
  });
  return {
    evalsha: async (...args) => (await ready).evalsha(...args),
    eval: async (...args) => (await ready).eval(...args),
    on: (event, listener) => (client === undefined ? listeners.push([event, listener]) : client.on(event, listener)),
    disconnect: () => {
      if (client !== undefined) client.disconnect();
      else void ready.then((c) => c.disconnect());
    },
  };
}

function redactUrl(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//***@');
}
