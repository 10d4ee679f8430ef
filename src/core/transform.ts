import { filter, map } from 'rxjs';
import { type Delivery, createDelivery, settlesUpstream } from './delivery.ts';
import { type Envelope, createEnvelope } from './envelope.ts';
import { type ExactJson, isDecodedObject, parseExactJson } from './exact-json.ts';
import { dropFields, keepFields, splitPath } from './json-fields.ts';
import type { JsonValidator } from './json-schema.ts';
import type { DeliveryOperator } from './stream.ts';

/** Why a message was refused, as a small label for counters (`bridge.messages.rejected{reason}`). */
export type RejectLabel = 'not_json' | 'not_object' | 'schema' | 'rate_limited' | 'failed';

/**
 * What the transform operators of one pipeline share. Each step passes a delivery on (the
 * same one, or one carrying a new envelope) or refuses it through `reject`; a refused message
 * is taken care of by whoever built the context (the bridge dead-letters it and acks it), so
 * a step never drops a message silently and never nacks one for what it contains.
 */
export interface TransformContext {
  /**
   * A delivery carrying `envelope` instead; settling it settles `delivery`. `json` is what the
   * envelope's payload was encoded from (as `exactJson` would decode it), if known.
   */
  derive(delivery: Delivery, envelope: Envelope, json?: ExactJson): Delivery;
  /** The payload decoded as JSON (once per envelope), or why it is not JSON. For steps that read it (validate). */
  json(envelope: Envelope): { readonly value: unknown } | { readonly error: string };
  /** The payload decoded for a step that re-encodes it (keep, drop, lookup): see `parseExactJson`. */
  exactJson(envelope: Envelope): ExactJson | { readonly error: string };
  /** Refuses a message: `reason` is for people (dead letters, logs), `label` for counters. */
  reject(delivery: Delivery, reason: string, label: RejectLabel): void;
}

/**
 * Called with the refused delivery (to settle once the refusal is recorded) and the envelope
 * it had when it entered the pipeline (what is recorded).
 */
export type RejectHandler = (delivery: Delivery, original: Envelope, reason: string, label: RejectLabel) => void;

export function createTransformContext(onReject: RejectHandler): TransformContext {
  const originals = new WeakMap<Delivery, Envelope>();
  const decoded = new WeakMap<Envelope, { value: unknown } | { error: string }>();
  const exact = new WeakMap<Envelope, ExactJson | { error: string }>();
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  const json = (envelope: Envelope) => {
    let result = decoded.get(envelope);
    if (result === undefined) {
      result = decodeJson(envelope.payload, utf8, parsePlainJson);
      decoded.set(envelope, result);
    }
    return result;
  };
  return {
    derive(delivery, envelope, value) {
      const derived = createDelivery(envelope, settlesUpstream(delivery));
      originals.set(derived, originals.get(delivery) ?? delivery.envelope);
      if (value !== undefined) {
        exact.set(envelope, value);
        // Without numbers kept as text, the value is what a plain parse would give.
        if (!value.raw) decoded.set(envelope, { value: value.value });
      }
      return derived;
    },
    json,
    exactJson(envelope) {
      let result = exact.get(envelope);
      if (result === undefined) {
        // One decode, one scan and one parse; a plain step after it (validate) reuses the value.
        result = decodeJson(envelope.payload, utf8, parseExactJson);
        exact.set(envelope, result);
        if (!decoded.has(envelope)) {
          if (!('value' in result)) decoded.set(envelope, result);
          else if (!result.raw) decoded.set(envelope, { value: result.value });
        }
      }
      return result;
    },
    reject(delivery, reason, label) {
      onReject(delivery, originals.get(delivery) ?? delivery.envelope, reason, label);
    },
  };
}

const parsePlainJson = (text: string): { value: unknown } => ({ value: JSON.parse(text) as unknown });

/** The payload's text parsed by `parse`, or why it is not JSON. */
function decodeJson<T>(payload: Uint8Array, utf8: { decode(bytes: Uint8Array): string }, parse: (text: string) => T): T | { error: string } {
  let text: string;
  try {
    text = utf8.decode(payload);
  } catch {
    return { error: 'payload is not JSON: not valid UTF-8' };
  }
  try {
    return parse(text);
  } catch (error) {
    return { error: `payload is not JSON: ${(error as Error).message}` };
  }
}

/**
 * An operator from a function that returns the delivery to pass on, or undefined when it
 * refused it (through the context). A function that throws refuses the message too: a bug in
 * one step must not stop the bridge.
 */
export function deliveryStep(name: string, context: TransformContext, step: (delivery: Delivery) => Delivery | undefined): DeliveryOperator {
  return (source) =>
    source.pipe(
      map((delivery) => {
        try {
          return step(delivery);
        } catch (error) {
          context.reject(delivery, `${name} failed: ${(error as Error).message}`, 'failed');
          return undefined;
        }
      }),
      filter((delivery): delivery is Delivery => delivery !== undefined),
    );
}

/** Passes messages whose payload is JSON (UTF-8) unchanged; refuses the others. */
export function decodeJsonStep(context: TransformContext): DeliveryOperator {
  return deliveryStep('decode', context, (delivery) => {
    const decoded = context.json(delivery.envelope);
    if ('value' in decoded) return delivery;
    context.reject(delivery, decoded.error, 'not_json');
    return undefined;
  });
}

/**
 * Re-encodes a JSON object payload with only (`keep`) or without (`drop`) the fields at the
 * dotted paths; the numbers it keeps are written as they came (see `parseExactJson`).
 */
export function selectFieldsStep(mode: 'keep' | 'drop', paths: readonly string[], context: TransformContext): DeliveryOperator {
  const split = paths.map(splitPath);
  return deliveryStep(mode, context, (delivery) => {
    const decoded = context.exactJson(delivery.envelope);
    if (!('value' in decoded)) {
      context.reject(delivery, decoded.error, 'not_json');
      return undefined;
    }
    const { value, raw } = decoded;
    if (!isDecodedObject(value)) {
      context.reject(delivery, `${mode} needs a JSON object payload, not ${describeJsonType(value)}`, 'not_object');
      return undefined;
    }
    const selected = mode === 'keep' ? keepFields(value, split) : dropFields(value, split);
    const { envelope } = delivery;
    const payload = Buffer.from(JSON.stringify(selected));
    return context.derive(delivery, createEnvelope({ ...envelope, payload }), { value: selected, raw });
  });
}

/** "an array", "null", "a number", ... for a decoded JSON value that is not an object. */
function describeJsonType(value: unknown): string {
  if (Array.isArray(value)) return 'an array';
  if (value === null) return 'null';
  // The one other kind of object: a number kept as its source text.
  return `a ${typeof value === 'object' ? 'number' : typeof value}`;
}

/** Passes messages whose JSON payload the validator accepts; refuses the others with "payload fails <what>: <why>". */
export function validateStep(what: string, validator: JsonValidator, context: TransformContext): DeliveryOperator {
  return deliveryStep('validate', context, (delivery) => {
    const decoded = context.json(delivery.envelope);
    if (!('value' in decoded)) {
      context.reject(delivery, decoded.error, 'not_json');
      return undefined;
    }
    const problem = validator(decoded.value);
    if (problem === undefined) return delivery;
    context.reject(delivery, `payload fails ${what}: ${problem}`, 'schema');
    return undefined;
  });
}
