import { z } from 'zod';
import { lazySchema } from '../core/lazy-schema.ts';
import { MAX_TIMER_MESSAGE, MAX_TIMER_MS } from '../core/timer-limit.ts';

/** The Redis every component uses when none is named. */
export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

const redisUrl = z.string().regex(/^rediss?:\/\//, 'a redis:// or rediss:// URL');

/**
 * One Redis connection, as declared under `redis:` in gateway.yaml. The rate limiter, the
 * `lookup` transform step and handlers' `tools.redis(name)` all take their connection from
 * here; components naming equal settings share one client per process.
 */
export const redisConnectionSchema = lazySchema(() =>
  z
    .strictObject({
      url: redisUrl.default(DEFAULT_REDIS_URL).meta({
        description:
          'The server: `redis://[user:password@]host:port[/db]`, `rediss://` for TLS. Write the password as ${REDIS_PASSWORD} to keep it out of the file; it is never logged.',
        examples: ['redis://redis.site-7.lan:6379/0'],
      }),
      commandTimeoutMs: z
        .int()
        .min(10)
        .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
        .default(1000)
        .meta({ description: 'How long one command may take before it fails with a timeout.', examples: [1000] }),
      connectTimeoutMs: z
        .int()
        .min(10)
        .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
        .default(2000)
        .meta({ description: 'How long connecting may take before an attempt counts as failed (reconnects follow with backoff, up to 2 s apart).', examples: [2000] }),
      offline: z
        .enum(['fail', 'wait'])
        .default('fail')
        .meta({
          description:
            'What a command does while the connection is down: `fail` at once (an `UPSTREAM_UNAVAILABLE` error naming the connection; the caller decides), or `wait` for the reconnection, up to `commandTimeoutMs`. Commands sent while the first connection is being made always wait for it.',
          examples: ['wait'],
        }),
    })
    .meta({ description: 'A Redis connection, opened on first use and shared by every component of the gateway that names the same settings.' }),
);

export type RedisConnectionSettings = z.output<ReturnType<typeof redisConnectionSchema>>;

export const connectionName = z.string().regex(/^[A-Za-z][A-Za-z0-9_-]*$/, 'a connection name: letters, digits, "_" and "-", starting with a letter');

export const redisConnectionsSchema = lazySchema(() =>
  z
    .record(connectionName, redisConnectionSchema())
    .default({})
    .meta({
      description: 'Redis connections by name, for rate limits (`rateLimit.redis`), `lookup` steps and handlers (`tools.redis(name)`). Each opens on first use.',
      examples: [{ cache: { url: 'redis://127.0.0.1:6379/0', offline: 'fail' } }],
    }),
);

export type RedisConnections = z.output<ReturnType<typeof redisConnectionsSchema>>;

/**
 * Where a component names its Redis: a connection name from gateway.yaml's `redis:`, or a
 * URL (a connection with the default settings).
 */
export const redisReference = (description: string) =>
  z
    .string()
    .min(1)
    .refine((value) => /^rediss?:\/\//.test(value) || connectionName.safeParse(value).success, 'a redis:// URL or the name of a connection under `redis:` in gateway.yaml')
    .default(DEFAULT_REDIS_URL)
    .meta({ description, examples: ['cache', 'redis://redis.site-7.lan:6379'] });

/** True when `reference` is a URL rather than a connection name. */
export function isRedisUrl(reference: string): boolean {
  return /^rediss?:\/\//.test(reference);
}

/** The settings `reference` stands for, or undefined for a name not in `connections`. */
export function resolveRedisReference(reference: string, connections: RedisConnections): RedisConnectionSettings | undefined {
  if (isRedisUrl(reference)) return redisConnectionSchema().parse({ url: reference });
  return connections[reference];
}

/** The URL without its password, for logs. */
export function redactRedisUrl(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//***@');
}
