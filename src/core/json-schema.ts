import { createRequire } from 'node:module';
import type { ErrorObject, Options } from 'ajv';

/** Checks one JSON value; the reason it fails (e.g. "/celsius must be number"), or undefined when it passes. */
export type JsonValidator = (value: unknown) => string | undefined;

/** The `$schema` of draft 2019-09 (with or without the trailing `#`). */
const DRAFT_2019_09 = /^https?:\/\/json-schema\.org\/draft\/2019-09\/schema#?$/;

/**
 * Compiles a JSON Schema into a validator: draft-07, or draft 2019-09 when the schema says so
 * in `$schema` (https://json-schema.org/draft/2019-09/schema); other drafts are refused. Throws
 * when the schema is not valid (an unknown keyword is an error, so typos do not pass
 * unnoticed). `format` is not checked (docs/bridges.md): ajv's formats are a separate package,
 * and strict ajv would otherwise refuse every schema naming one (`format: date-time`).
 *
 * ajv takes ~70 ms to load, so it is required here, on first use, and only by gateways
 * whose bridges validate payloads (its 2019-09 class only by those whose schemas declare it).
 * Synchronous, because config loading is.
 */
export function compileJsonSchema(schema: unknown): JsonValidator {
  // Not named `require`: esbuild rewrites calls of that name in the bundle (dist/app), which
  // broke `new` on ajv's class there.
  const load = createRequire(import.meta.url);
  const options: Options = { allErrors: false, strictTypes: false, strictTuples: false, validateFormats: false, logger: false };
  const declared = (schema as { $schema?: unknown } | null)?.$schema;
  // One instance per schema: two schemas may declare the same $id.
  let ajv: import('ajv').Ajv;
  if (typeof declared === 'string' && DRAFT_2019_09.test(declared)) {
    const { Ajv2019 } = load('ajv/dist/2019.js') as typeof import('ajv/dist/2019.js');
    ajv = new Ajv2019(options);
  } else {
    const { Ajv } = load('ajv') as typeof import('ajv');
    ajv = new Ajv(options);
  }
  const validate = ajv.compile(schema as object);
  return (value) => (validate(value) ? undefined : describe(validate.errors?.[0]));
}

function describe(error: ErrorObject | undefined): string {
  if (error === undefined) return 'does not match';
  const message = error.message ?? error.keyword;
  return error.instancePath === '' ? message : `${error.instancePath} ${message}`;
}
