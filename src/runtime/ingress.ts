import { identity } from 'rxjs';
import type { Logger } from 'pino';
import type { BridgeConfig } from '../config/schema.ts';
import type { Counters } from '../core/component.ts';
import type { Delivery } from '../core/delivery.ts';
import type { Envelope } from '../core/envelope.ts';
import { FerryError } from '../core/errors.ts';
import { compileJsonSchema } from '../core/json-schema.ts';
import type { DeliveryOperator } from '../core/stream.ts';
import { compileTemplate } from '../core/template.ts';
import { type RejectLabel, type TransformContext, createTransformContext, decodeJsonStep, selectFieldsStep, validateStep } from '../core/transform.ts';
import type { TransformStep } from '../core/transform-config.ts';
import { lookupStep } from '../redis/lookup.ts';
import { rateLimit } from '../redis/rate-limit.ts';
import { steadyNow } from '../core/steady-clock.ts';

export interface IngressDeps {
  /** Records refused messages: BufferWriter.deadLetter. */
  readonly deadLetters: { deadLetter(bridge: string, delivery: Delivery, envelope: Envelope, sink: string, reason: string): void };
  readonly logger: Logger;
  readonly counters: Counters;
  /** The source's topic filters (its `filters`), for `${1}` in the rate limit key. */
  readonly sourceFilters: readonly string[];
}

/** At most one warning per this interval per kind of refusal; the counters have every one. */
const WARN_EVERY_MS = 60_000;

/**
 * What a bridge does to messages between its source and the buffer: its `rateLimit`, then
 * its `transform` steps in order. A message either passes on (maybe with a new envelope, whose
 * ack settles the original) or is refused: counted as `bridge.messages.rejected{bridge,reason}`,
 * recorded as it arrived in the bridge's dead letters with the reason, and acknowledged once
 * that is on disk, so a bad message never blocks its device. The identity when neither is set.
 */
export function ingressOperators(config: BridgeConfig, deps: IngressDeps): DeliveryOperator {
  const steps = config.transform ?? [];
  if (steps.length === 0 && config.rateLimit === undefined) return identity;
  const { logger, counters } = deps;
  const lastWarned = new Map<RejectLabel, { at: number; since: number }>();
  const refuse = (sink: string, delivery: Delivery, original: Envelope, reason: string, label: RejectLabel) => {
    counters.count('bridge.messages.rejected', { bridge: config.name, reason: label });
    deps.deadLetters.deadLetter(config.name, delivery, original, sink, reason);
    const warned = lastWarned.get(label) ?? { at: 0, since: 0 };
    warned.since += 1;
    if (steadyNow() - warned.at >= WARN_EVERY_MS) {
      logger.warn(
        { reason, topic: original.topic, clientId: original.origin.clientId, rejectedSinceLastWarning: warned.since, label },
        `${sink}: message rejected and dead-lettered`,
      );
      warned.at = steadyNow();
      warned.since = 0;
    }
    lastWarned.set(label, warned);
  };

  const operators: DeliveryOperator[] = [];
  if (config.rateLimit !== undefined) {
    const template = compileTemplate(config.rateLimit.key);
    const filters = deps.sourceFilters;
    operators.push(
      rateLimit({
        bridge: config.name,
        config: config.rateLimit,
        keyOf: (delivery) => template.render({ envelope: delivery.envelope, filters }),
        reject: (delivery, reason, label) => refuse('rateLimit', delivery, delivery.envelope, reason, label),
        logger,
        counters,
      }),
    );
  }
  const context = createTransformContext((delivery, original, reason, label) => refuse('transform', delivery, original, reason, label));
  operators.push(...steps.map((step) => stepOperator(step, context, config, deps)));
  return (source) => operators.reduce((stream, operator) => stream.pipe(operator), source);
}

function stepOperator(step: TransformStep, context: TransformContext, config: BridgeConfig, deps: IngressDeps): DeliveryOperator {
  if ('decode' in step) return decodeJsonStep(context);
  if ('keep' in step) return selectFieldsStep('keep', step.keep, context);
  if ('drop' in step) return selectFieldsStep('drop', step.drop, context);
  if ('lookup' in step) {
    const template = compileTemplate(step.lookup.key);
    const filters = deps.sourceFilters;
    return lookupStep({
      bridge: config.name,
      config: step.lookup,
      context,
      keyOf: (delivery) => template.render({ envelope: delivery.envelope, filters }),
      logger: deps.logger,
      counters: deps.counters,
    });
  }
  const { resolved } = step.validate;
  if (resolved === undefined) {
    throw new FerryError('CONFIG_INVALID', `bridge '${config.name}' (${config.file}): a validate step whose JSON Schema was not loaded (load bridges with loadConfig)`);
  }
  // Compiled once, when the bridge starts.
  return validateStep(resolved.label, compileJsonSchema(resolved.jsonSchema), context);
}
