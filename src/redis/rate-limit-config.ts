import { z } from 'zod';
import { compileTemplate } from '../core/template.ts';
import { type RedisConnectionSettings, redisReference } from './connection-config.ts';
import { lazySchema } from '../core/lazy-schema.ts';
import { MAX_TIMER_MESSAGE, MAX_TIMER_MS } from '../core/timer-limit.ts';

export const rateLimitSchema = lazySchema(() =>
  z
    .strictObject({
      redis: redisReference('The Redis holding the limit, shared by every gateway that names the same server: the name of a connection under `redis:` in gateway.yaml, or a URL.'),
      messagesPerSecond: z
        .number()
        .positive()
        .meta({ description: 'Messages per second each key may send, over all gateways.', examples: [10] }),
      burst: z
        .int()
        .min(1)
        .optional()
        .meta({
          description: "Messages a key may send at once after being quiet (the token bucket's size); `messagesPerSecond` rounded up when absent.",
          examples: [20],
        }),
      key: z
        .string()
        .min(1)
        .default('${clientId}')
        .superRefine((key, ctx) => {
          try {
            compileTemplate(key);
          } catch (error) {
            ctx.addIssue({ code: 'custom', message: (error as Error).message });
          }
        })
        .meta({
          description:
            'What one limit applies to, as a message template: `${clientId}` (each device), `${1}` (the first `+` of the topic filter), or a constant such as `all` for one limit over the whole bridge.',
          examples: ['${clientId}', 'all'],
        }),
      keyPrefix: z
        .string()
        .min(1)
        .optional()
        .meta({
          description: 'Prefix of the Redis keys; `ferry:ratelimit:<bridge>:` when absent. Bridges (and gateways) with the same prefix and key share a limit.',
          examples: ['ferry:ratelimit:telemetry:'],
        }),
      onExceed: z
        .enum(['reject', 'delay'])
        .default('reject')
        .meta({
          description:
            '`reject`: a message over the limit is acknowledged and dead-lettered with reason `rate limited`. `delay`: it waits, unacknowledged, until the limit lets it through (the device holds back its next messages).',
          examples: ['delay'],
        }),
      maxWaiting: z
        .int()
        .min(1)
        .default(10_000)
        .meta({
          description: 'Most messages of this bridge waiting for the limit (`delay`) or for Redis; more are refused unacknowledged, so their devices send them again later.',
          examples: [10000],
        }),
      failOpen: z
        .boolean()
        .default(true)
        .meta({
          description:
            'When Redis cannot be reached: `true` lets messages through unlimited (counted as `ratelimit.unavailable`, one warning per outage); `false` holds them unacknowledged until Redis is back.',
          examples: [true],
        }),
      leaseMs: z
        .int()
        .min(0)
        .default(100)
        .meta({
          description:
            'Each gateway takes up to this many milliseconds of tokens (`messagesPerSecond` × `leaseMs` / 1000, at most `burst`) from Redis ahead of need per key and spends them locally, so that most messages pass without a Redis round trip. A gateway holds at most one lease per key (given up after a minute without messages for the key). 0 asks Redis for every message. See the overshoot bound, and how a lease can leave another gateway short within the limit, in docs/bridges.md.',
          examples: [100],
        }),
      timeoutMs: z
        .int()
        .min(10)
        .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
        .default(1000)
        .meta({ description: 'How long one Redis call may take before Redis counts as unreachable.', examples: [1000] }),
    })
    .meta({ description: 'A rate limit kept in Redis and shared by the whole fleet, applied before the buffer. Off when absent.' }),
);

export type RateLimitConfig = z.output<ReturnType<typeof rateLimitSchema>> & {
  /** Set by the config loader: the connection `redis` names (a URL stands for one with default settings). */
  readonly connection?: RedisConnectionSettings;
};
