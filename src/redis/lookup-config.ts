import { z } from 'zod';
import { compileTemplate } from '../core/template.ts';
import { type RedisConnectionSettings, redisReference } from './connection-config.ts';
import { lazySchema } from '../core/lazy-schema.ts';

/** `lookup:` in a bridge's `transform` list: enrich the JSON payload with a value from Redis. */
export const lookupSchema = lazySchema(() =>
  z
    .strictObject({
      redis: redisReference('The Redis to read: the name of a connection under `redis:` in gateway.yaml, or a URL.'),
      key: z
        .string()
        .min(1)
        .superRefine((key, ctx) => {
          try {
            compileTemplate(key);
          } catch (error) {
            ctx.addIssue({ code: 'custom', message: (error as Error).message });
          }
        })
        .meta({ description: 'The Redis key to read, as a message template (`site:${1}`, `device:${clientId}`).', examples: ['site:${1}'] }),
      hashField: z
        .string()
        .min(1)
        .optional()
        .meta({ description: 'Read this field of the hash at `key` (HGET) instead of the string at `key` (GET).', examples: ['site'] }),
      field: z
        .string()
        .regex(/^[^.\s]+(\.[^.\s]+)*$/, 'a field name or a dotted path such as meta.site')
        .meta({ description: 'Where the value goes in the JSON object payload; a dotted path creates nested objects.', examples: ['site'] }),
      as: z
        .enum(['text', 'json'])
        .default('text')
        .meta({ description: 'How the stored value is written: `text` as a string, `json` parsed (a value that is not JSON rejects the message).', examples: ['json'] }),
      cacheMs: z
        .int()
        .min(0)
        .default(60_000)
        .meta({ description: 'How long a value (or a miss) read from Redis is reused for other messages with the same key; 0 reads Redis for every message.', examples: [60000] }),
      cacheSize: z
        .int()
        .min(1)
        .default(10_000)
        .meta({ description: 'Most keys kept in the local cache; the oldest entry goes first.', examples: [10000] }),
      onMiss: z
        .enum(['pass', 'reject'])
        .default('pass')
        .meta({
          description: 'When the key does not exist: `pass` the message on (with `default` written to `field` when given, else unchanged), or `reject` it to the dead letters.',
          examples: ['reject'],
        }),
      default: z
        .json()
        .optional()
        .meta({ description: 'The value written to `field` on a miss (with `onMiss: pass`).', examples: ['unknown'] }),
      onUnavailable: z
        .enum(['hold', 'pass', 'reject'])
        .default('hold')
        .meta({
          description:
            'When Redis cannot be reached (or times out): `hold` keeps the messages unacknowledged and tries again every second, so the devices keep them (past `maxWaiting`, newer ones are refused unacknowledged and sent again by their devices); `pass` stores them without the field (counted as `lookup.unavailable`); `reject` moves them to the dead letters with the reason.',
          examples: ['pass'],
        }),
      maxWaiting: z
        .int()
        .min(1)
        .default(10_000)
        .meta({ description: 'Most messages waiting for Redis in this step; more are refused unacknowledged (their devices send them again).', examples: [10000] }),
    })
    .meta({ description: '`lookup: {...}`: reads a value from Redis by a key made from the message and writes it into the JSON object payload.' }),
);

export type LookupConfig = z.output<ReturnType<typeof lookupSchema>> & {
  /** Set by the config loader: the connection `redis` names. */
  readonly connection?: RedisConnectionSettings;
};
