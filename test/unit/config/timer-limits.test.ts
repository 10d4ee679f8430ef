import assert from 'node:assert/strict';
import { test } from 'node:test';
import { z } from 'zod';
import { bridgeSchema, deviceSchema, gatewaySchema } from '../../../src/config/schema.ts';
import { MAX_TIMER_MS } from '../../../src/core/timer-limit.ts';
import { componentKinds } from '../../../src/runtime/registry.ts';

/**
 * Settings in milliseconds that are only compared with an age, never armed as a timer as they
 * are (a timer derived from one is clamped where it is set): a buffer may keep a month.
 */
const COMPARED_ONLY = new Set(['maxAgeMs', 'cacheMs', 'maxBacklogAgeMs', 'stalledAfterMs', 'behindAfterMs', 'leaseMs', 'maxHoldMs', 'windowMs']);

type Json = { [key: string]: unknown };

/** Every `*Ms` property in a JSON Schema, with its path and its maximum. */
function durations(node: unknown, path: string, found: Array<{ path: string; maximum: unknown }>): void {
  if (node === null || typeof node !== 'object') return;
  if (Array.isArray(node)) {
    node.forEach((item, i) => durations(item, `${path}[${i}]`, found));
    return;
  }
  const properties = (node as Json).properties as Json | undefined;
  if (properties !== undefined) {
    for (const [name, property] of Object.entries(properties)) {
      if (name.endsWith('Ms') && !COMPARED_ONLY.has(name)) found.push({ path: `${path}.${name}`, maximum: (property as Json).maximum });
    }
  }
  for (const [key, value] of Object.entries(node)) durations(value, `${path}.${key}`, found);
}

test('every setting in milliseconds that becomes a timer is refused past the longest timer Node arms', () => {
  const schemas = { gateway: gatewaySchema(), bridge: bridgeSchema(componentKinds), device: deviceSchema() };
  const found: Array<{ path: string; maximum: unknown }> = [];
  for (const [kind, schema] of Object.entries(schemas)) {
    durations(z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }), kind, found);
  }
  assert.ok(found.length > 20, `found only ${found.length} settings in milliseconds: the walk is broken`);
  const uncapped = found.filter(({ maximum }) => typeof maximum !== 'number' || maximum > MAX_TIMER_MS).map(({ path }) => path);
  assert.deepEqual([...new Set(uncapped)], []);
});
