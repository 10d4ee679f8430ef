import { z } from 'zod';
import { lazySchema } from '../core/lazy-schema.ts';
import { MAX_TIMER_MESSAGE, MAX_TIMER_MS } from '../core/timer-limit.ts';

/** The Redis every component uses when none is named. */
export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

/**
 * What keeps `url` from being a Redis URL ioredis connects with as written, or undefined. A
 * port out of range or a stray character fails only when the connection opens (failOpen would
 * then pass every message for ever), and a database that is not a number is sent as SELECT NaN,
 * whose error reply nothing awaits: the process stops on an unhandled rejection. The URL is
 * never quoted back: it may hold a password.
 */
export function redisUrlProblem(url: string): string | undefined {
  if (!/^rediss?:\/\//.test(url)) return 'a redis:// or rediss:// URL';
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return 'not a valid URL (a port from 1 to 65535, no spaces; write special characters of a password %-encoded)';
  }
  const db = parsed.searchParams.get('db');
  if (!/^\/?\d*$/.test(parsed.pathname) || (db !== null && !/^\d+$/.test(db))) return 'the database of a Redis URL is a number (redis://host:6379/0)';
  return undefined;
}

// The pattern stays for editors' JSON Schema; the refinement checks the rest.
const redisUrl = z
  .string()
  .regex(/^rediss?:\/\//, 'a redis:// or rediss:// URL')
  .superRefine((url, ctx) => {
    const problem = isRedisUrl(url) ? redisUrlProblem(url) : undefined;
    if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
  });

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
        .meta({
          description:
            'How long one command may take before it fails with a timeout. A command already written to Redis when it times out still runs once Redis gets to it (see docs/handlers.md); one that timed out before it was written is never sent.',
          examples: [1000],
        }),
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
    .superRefine((value, ctx) => {
      if (!isRedisUrl(value)) {
        if (!connectionName.safeParse(value).success) ctx.addIssue({ code: 'custom', message: 'a redis:// URL or the name of a connection under `redis:` in gateway.yaml' });
        return;
      }
      const problem = redisUrlProblem(value);
      if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
    })
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
