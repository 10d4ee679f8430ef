import { z } from 'zod';
import type { ComponentKinds } from './schema.ts';
import { bridgeSchema, deviceSchema, gatewaySchema } from './schema.ts';

export type ConfigFileKind = 'gateway' | 'bridge' | 'device';

type JsonSchema = Record<string, unknown>;

/**
 * A value that holds a `${VAR}` (`${VAR:-default}`, `${VAR:+word}`), not escaped as `$${`:
 * Ferry interpolates it before it validates the value, so the value as written may be any
 * such string (docs/configuration.md). The variable names are those interpolation takes
 * (src/config/interpolate.ts): upper case, so message templates (`${topic}`) do not match.
 */
export const INTERPOLATION_PATTERN = '(^|[^$])\\$\\{[A-Z_][A-Z0-9_]*(\\}|:-|:\\+)';

/**
 * The same in a setting that takes only numbers or booleans, where Ferry reads the text as it
 * would be unquoted: around and between the `${VAR}`s (and in a default) only what a number or
 * boolean can hold (letters, digits, `_ + - .`, spaces), so `"${HOST}:${PORT}"` and
 * `http://${HOST}`, which Ferry refuses whatever the variables hold, are refused here too.
 */
export const NUMBER_INTERPOLATION_PATTERN = '^(?=[\\s\\S]*\\$\\{)(?:[\\w\\s+.-]|\\$\\{[A-Z_][A-Z0-9_]*(?:\\}|:-|:\\+)|\\})*$';

/**
 * The JSON Schema of a config file, for editors (`ferry config schema`). It is the zod schema's,
 * except that a setting with a type or constraints a `${VAR}` string does not meet (a number,
 * a boolean, an enum, a string with a pattern or a minimum length) also takes a string holding
 * one: `port: ${MQTT_PORT}` is valid there as it is for Ferry. A value without `${` is checked
 * exactly as before.
 */
export function configJsonSchema(kind: ConfigFileKind, kinds: ComponentKinds): JsonSchema {
  const schema = { gateway: () => gatewaySchema(), bridge: () => bridgeSchema(kinds), device: () => deviceSchema() }[kind]();
  const json = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any', target: 'draft-2020-12' }) as JsonSchema;
  return acceptInterpolation(json);
}

/** Keywords whose value is a schema, an array of schemas, or a map of names to schemas. `not` is left out: a string it took would be refused. */
const ONE = ['additionalProperties', 'unevaluatedProperties', 'items', 'contains', 'if', 'then', 'else'];
const MANY = ['anyOf', 'oneOf', 'allOf', 'prefixItems'];
const BY_NAME = ['properties', 'patternProperties', 'dependentSchemas', '$defs', 'definitions'];

/** Keywords that only describe: they stay beside the `anyOf` made for a setting. */
const ANNOTATIONS = new Set(['$schema', '$id', '$anchor', '$comment', 'id', 'title', 'description', 'default', 'examples', 'deprecated', 'readOnly', 'writeOnly']);

/** Keywords that make a string schema refuse some strings. */
const STRING_CONSTRAINTS = ['pattern', 'minLength', 'maxLength', 'format', 'enum', 'const'];

/** `schema` with every scalar setting (see `configJsonSchema`) also taking an interpolation. */
export function acceptInterpolation(schema: JsonSchema): JsonSchema {
  const out: JsonSchema = { ...schema };
  for (const key of ONE) if (isSchema(out[key])) out[key] = acceptInterpolation(out[key]);
  for (const key of MANY) if (Array.isArray(out[key])) out[key] = out[key].map((s: unknown) => (isSchema(s) ? acceptInterpolation(s) : s));
  for (const key of BY_NAME) {
    const map = out[key];
    if (isSchema(map)) out[key] = Object.fromEntries(Object.entries(map).map(([name, s]) => [name, isSchema(s) ? acceptInterpolation(s) : s]));
  }
  if (!refusesInterpolation(out)) return out;
  const kept = Object.entries(out).filter(([key]) => ANNOTATIONS.has(key));
  const checks = Object.fromEntries(Object.entries(out).filter(([key]) => !ANNOTATIONS.has(key)));
  const pattern = takesNumberOrBoolean(out) ? NUMBER_INTERPOLATION_PATTERN : INTERPOLATION_PATTERN;
  return { ...Object.fromEntries(kept), anyOf: [checks, { type: 'string', pattern }] };
}

/** A setting whose values are all numbers or booleans (by type, or by its `enum` or `const`). */
function takesNumberOrBoolean(schema: JsonSchema): boolean {
  const types = schema['type'] === undefined ? [] : ([] as unknown[]).concat(schema['type']);
  if (types.length > 0) return types.every((type) => type === 'number' || type === 'integer' || type === 'boolean');
  const values = [...(Array.isArray(schema['enum']) ? schema['enum'] : []), ...('const' in schema ? [schema['const']] : [])];
  return values.length > 0 && values.every((v) => typeof v === 'number' || typeof v === 'boolean');
}

/** A scalar setting (no sub-schemas) whose checks a `${VAR}` string may fail. */
function refusesInterpolation(schema: JsonSchema): boolean {
  if ([...ONE, ...MANY, ...BY_NAME, 'not', '$ref'].some((key) => key in schema)) return false;
  const types = schema['type'] === undefined ? [] : ([] as unknown[]).concat(schema['type']);
  if (types.includes('object') || types.includes('array')) return false;
  if (types.length === 0) return 'enum' in schema || 'const' in schema;
  if (types.some((type) => type !== 'string')) return true;
  return STRING_CONSTRAINTS.some((key) => key in schema);
}

function isSchema(value: unknown): value is JsonSchema {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
