import { createRequire } from 'node:module';
import type { ErrorObject } from 'ajv';

/** Checks one JSON value; the reason it fails (e.g. "/celsius must be number"), or undefined when it passes. */
export type JsonValidator = (value: unknown) => string | undefined;

/**
 * Compiles a JSON Schema (draft-07 and 2019-09 keywords) into a validator; throws when the
 * schema is not valid (an unknown keyword is an error, so typos do not pass unnoticed).
 *
 * ajv takes ~70 ms to load, so it is required here, on first use, and only by gateways
 * whose bridges validate payloads. Synchronous, because config loading is.
 */
export function compileJsonSchema(schema: unknown): JsonValidator {
  const { Ajv } = createRequire(import.meta.url)('ajv') as typeof import('ajv');
  // One instance per schema: two schemas may declare the same $id.
  const ajv = new Ajv({ allErrors: false, strictTypes: false, strictTuples: false, logger: false });
  const validate = ajv.compile(schema as object);
  return (value) => (validate(value) ? undefined : describe(validate.errors?.[0]));
}

function describe(error: ErrorObject | undefined): string {
  if (error === undefined) return 'does not match';
  const message = error.message ?? error.keyword;
  return error.instancePath === '' ? message : `${error.instancePath} ${message}`;
}
