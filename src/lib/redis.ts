/**
 * The fleet-wide rate limit (token buckets in Redis) as an operator, for use outside the
 * gateway: `import { rateLimit } from 'ferry/redis'`. The same limiter as a bridge's `rateLimit:`.
 */
import type { z } from 'zod';
import { compileTemplate } from '../core/template.ts';
import type { Delivery } from '../core/delivery.ts';
import type { DeliveryOperator } from '../core/stream.ts';
import { rateLimit as redisRateLimit } from '../redis/rate-limit.ts';
import { rateLimitSchema } from '../redis/rate-limit-config.ts';
import { type StreamOptions, contextFor, validated } from './component.ts';

export type { Delivery } from '../core/delivery.ts';
export type { Envelope } from '../core/envelope.ts';
export type { DeliveryOperator, Sink, SinkEvent, Source } from '../core/stream.ts';
export type { StreamOptions } from './component.ts';

/** The options of `rateLimit`: a bridge's `rateLimit:` (docs/reference/bridge.md). */
export type RateLimitConfig = z.input<typeof rateLimitSchema>;

export interface RateLimitHooks {
  /**
   * Takes a message refused for being over its limit (`onExceed: reject`): settle it (ack to
   * drop it, nack to have it sent again). By default it is nacked with the reason.
   */
  readonly reject?: (delivery: Delivery, reason: string) => void;
}

/**
 * An operator passing each delivery on once its key (the `key` template: `${clientId}`,
 * `${key}`, a constant) has a token in Redis, in order per key; acks pass through untouched.
 */
export function rateLimit(config: RateLimitConfig, options: StreamOptions & RateLimitHooks = {}): DeliveryOperator {
  const parsed = validated('rateLimit', rateLimitSchema, config);
  const ctx = contextFor(options);
  const template = compileTemplate(parsed.key);
  return redisRateLimit({
    bridge: ctx.bridge,
    config: parsed,
    keyOf: (delivery) => {
      try {
        return template.render({ envelope: delivery.envelope, filters: [] });
      } catch {
        return '(none)';
      }
    },
    reject: options.reject ?? ((delivery, reason) => delivery.nack(new Error(reason))),
    logger: ctx.logger,
    counters: ctx.counters,
  });
}
