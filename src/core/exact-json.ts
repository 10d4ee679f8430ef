import { isJsonObject } from './json-fields.ts';

/**
 * JSON decoded for re-encoding: a number a double cannot hold (a nanosecond timestamp, a 64-bit
 * serial: 1733000000123456789 would be written back as 1733000000123456800) is kept as its
 * source text (JSON.rawJSON), which JSON.stringify writes back as it was. `raw` is true when
 * the value holds any such number.
 */
export interface ExactJson {
  readonly value: unknown;
  readonly raw: boolean;
}

/** Node 22's JSON.rawJSON, JSON.isRawJSON and the reviver's source text, which lib es2023 does not declare. */
const sourceJson = JSON as JSON & {
  rawJSON(text: string): unknown;
  isRawJSON(value: unknown): boolean;
  parse(text: string, reviver: (key: string, value: unknown, context: { readonly source?: string }) => unknown): unknown;
};

/**
 * Could `text` hold a number that a double does not give back? Only one with 16 or more
 * significant digits (15 always come back), written over at least 16 characters of digits and a
 * point, or with a three-digit exponent (1e400 is Infinity, 1e-320 loses digits). A scan of the
 * text, so that the common payload takes the plain parse (a parse with a reviver takes several
 * times as long); a match inside a string only costs that slower parse. A loop, not a regular
 * expression: one pass, where /\d[\d.]{15}/ tries again from every digit of a long number.
 */
function mayLoseDigits(text: string): boolean {
  let run = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (isDigit(c) || c === 0x2e) {
      run += 1;
      if (run === 16) return true;
      continue;
    }
    run = 0;
    if ((c === 0x65 || c === 0x45) && isDigit(text.charCodeAt(i - 1))) {
      const sign = text.charCodeAt(i + 1);
      const j = sign === 0x2b || sign === 0x2d ? i + 2 : i + 1;
      if (isDigit(text.charCodeAt(j)) && isDigit(text.charCodeAt(j + 1)) && isDigit(text.charCodeAt(j + 2))) return true;
    }
  }
  return false;
}

/** An ASCII digit's code (NaN, past either end of the text, is not). */
function isDigit(code: number): boolean {
  return code >= 0x30 && code <= 0x39;
}

/** Parses `text` (throws when it is not JSON) keeping the source text of numbers that would not survive a double. */
export function parseExactJson(text: string): ExactJson {
  if (!mayLoseDigits(text)) return { value: JSON.parse(text) as unknown, raw: false };
  let raw = false;
  const value = sourceJson.parse(text, (_key: string, value: unknown, context: { readonly source?: string }) => {
    if (typeof value !== 'number' || context.source === undefined || String(value) === context.source) return value;
    raw = true;
    return sourceJson.rawJSON(context.source);
  });
  return { value, raw };
}

/** A JSON object as decoded (not an array, null, or a number kept as its source text). */
export function isDecodedObject(value: unknown): value is Record<string, unknown> {
  return isJsonObject(value) && !sourceJson.isRawJSON(value);
}

/** Whether `value` is a number kept as its source text (JSON.rawJSON) by `parseExactJson`. */
export function isRawJson(value: unknown): value is { readonly rawJSON: string } {
  return sourceJson.isRawJSON(value);
}
