/**
 * Redis for use outside the gateway: `import { rateLimit, redisClient } from 'ferry/redis'`.
 * The fleet-wide rate limit (token buckets in Redis) as an operator, the same limiter as a
 * bridge's `rateLimit:`; and the small client a handler's `tools.redis(name)` gives.
 */
import type { z } from 'zod';
import { compileTemplate } from '../core/template.ts';
import type { Delivery } from '../core/delivery.ts';
import { FerryError } from '../core/errors.ts';
import type { DeliveryOperator } from '../core/stream.ts';
import { processRedisClients } from '../redis/clients.ts';
import { isRedisUrl, redisConnectionSchema } from '../redis/connection-config.ts';
import { type RedisTools, leasedTools } from '../redis/handler-tools.ts';
import { type RateLimitRefusal, rateLimit as redisRateLimit } from '../redis/rate-limit.ts';
import { rateLimitSchema } from '../redis/rate-limit-config.ts';
import { type StreamOptions, contextFor, validated } from './component.ts';

export type { Delivery } from '../core/delivery.ts';
export type { Envelope } from '../core/envelope.ts';
export type { DeliveryOperator, Sink, SinkEvent, Source } from '../core/stream.ts';
export type { StreamOptions } from './component.ts';
export type { RedisSetOptions, RedisTools } from '../redis/handler-tools.ts';
export type { RateLimitRefusal } from '../redis/rate-limit.ts';

/** The options of `rateLimit`: a bridge's `rateLimit:` (docs/reference/bridge.md). */
export type RateLimitConfig = z.input<ReturnType<typeof rateLimitSchema>>;

export interface RateLimitHooks {
  /**
   * Takes a refused message: over its limit (`onExceed: reject`, label `rate_limited`), or one
   * no limit can decide (label `failed`: its `key` template has no value for it, or Redis
   * refuses its bucket's key, e.g. WRONGTYPE). Settle it (ack to drop it, nack to have it sent
   * again). By default it is nacked with the reason.
   */
  readonly reject?: (delivery: Delivery, reason: string, label: RateLimitRefusal) => void;
}

/**
 * An operator passing each delivery on once its key (the `key` template: `${clientId}`,
 * `${key}`, a constant) has a token in Redis, in order per key; acks pass through untouched.
 * `redis` is a `redis://` (or `rediss://`) URL: connection names are gateway.yaml's, which the
 * library does not read, so a name throws a CONFIG_INVALID FerryError here.
 */
export function rateLimit(config: RateLimitConfig, options: StreamOptions & RateLimitHooks = {}): DeliveryOperator {
  const parsed = validated('rateLimit', rateLimitSchema(), config);
  if (!isRedisUrl(parsed.redis)) {
    throw new FerryError(
      'CONFIG_INVALID',
      `rateLimit: redis '${parsed.redis}' is not a redis:// or rediss:// URL; connection names come from gateway.yaml, which the library does not read: give the URL (redis://127.0.0.1:6379)`,
    );
  }
  const ctx = contextFor(options);
  const template = compileTemplate(parsed.key);
  return redisRateLimit({
    bridge: ctx.bridge,
    config: parsed,
    keyOf: (delivery) => template.render({ envelope: delivery.envelope, filters: [] }),
    reject: options.reject ?? ((delivery, reason) => delivery.nack(new Error(reason))),
    logger: ctx.logger,
    counters: ctx.counters,
  });
}

/** The options of `redisClient`: a connection under `redis:` in gateway.yaml (`url`, `commandTimeoutMs`, `connectTimeoutMs`, `offline`). */
export type RedisClientConfig = z.input<ReturnType<typeof redisConnectionSchema>>;

/** `RedisTools` with a way to let go of the connection. */
export interface RedisClient extends RedisTools {
  /** Gives the connection back; it closes when nothing else in the process uses the same settings. Later commands of this client reject (SHUTDOWN). */
  close(): Promise<void>;
}

/**
 * A small typed Redis client (get/set with TTL and NX, del, exists, incr/expire, JSON values,
 * hashes) over ioredis, with a command timeout and the chosen offline behaviour (`fail` at
 * once by default, or `wait` for the reconnection). A failed command rejects with a FerryError
 * naming the command, the key and the server (its password left out). Clients with equal
 * settings share one connection in the process, as the rate limiter's does.
 *
 * ```ts
 * const redis = redisClient({ url: 'redis://localhost:6379' });
 * await redis.setJson('site:7', { name: 'Plant 7' }, { ttlMs: 60_000 });
 * const site = await redis.getJson<{ name: string }>('site:7');
 * await redis.close();
 * ```
 */
export function redisClient(config: RedisClientConfig = {}, options: Pick<StreamOptions, 'name'> = {}): RedisClient {
  const settings = validated('redis', redisConnectionSchema(), config);
  const { tools, release } = leasedTools(options.name ?? 'redis', processRedisClients.acquire(settings));
  return {
    ...tools,
    close: async () => release(),
  };
}
