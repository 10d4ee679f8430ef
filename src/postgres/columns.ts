import { isRawJson } from '../core/exact-json.ts';
import type { RawFieldValue } from '../core/template.ts';

/** A column as the catalog describes it. */
export interface ColumnInfo {
  readonly name: string;
  /**
   * The type without its modifier (`character varying`, `bpchar`, `"bit"`), for the cast: the
   * column's own length or precision is then applied by the insert, which refuses what does not
   * fit instead of cutting it. `format_type(oid, -1)`, not `(oid, NULL)`, whose `character` and
   * `bit` are char(1) and bit(1): a cast to those cut every value to one character, or refused
   * every bit string longer than one.
   */
  readonly castType: string;
  /** As declared (`character varying(20)`), for messages. */
  readonly declaredType: string;
  /** The base type's name in pg_type (`int4`, `jsonb`; a domain's base type). */
  readonly baseType: string;
  /** pg_type.typcategory: `S` string, `N` numeric, `A` array... */
  readonly category: string;
  readonly notNull: boolean;
}

/**
 * What is wrong with a value for a column's type: none given (`missing`, the column NOT NULL),
 * text that is not UTF-8 (`encoding`), a value of the wrong form (`form`: not a number, not
 * JSON), beyond the type's range (`range`), a NUL character (`nul`). The sink tells refusals
 * apart by column and problem when it asks whether the table changed (`InsertPlans`).
 */
export type ValueProblem = 'missing' | 'encoding' | 'form' | 'range' | 'nul';

/** Why a message's value cannot go into a column; the sink refuses that message alone. */
export class ValueError extends Error {
  override readonly name = 'ValueError';
  readonly problem: ValueProblem;

  constructor(message: string, problem: ValueProblem) {
    super(message);
    this.problem = problem;
  }
}

/**
 * Turns a value into the text PostgreSQL's input function of the column's type reads (every
 * value goes to the server as text in a `text[]` and is cast there), or null for SQL NULL.
 * The common mistakes are refused here, with a reason, so that a bad message does not cost
 * a failed statement; whatever slips through is refused by the server and found by the sink.
 */
export type Converter = (value: RawFieldValue) => string | null;

const utf8 = new TextDecoder('utf-8', { fatal: true });

const INT_RANGES: Readonly<Record<string, readonly [bigint, bigint]>> = {
  int2: [-32768n, 32767n],
  int4: [-2147483648n, 2147483647n],
  int8: [-9223372036854775808n, 9223372036854775807n],
};
const UUID = /^\{?[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\}?$/;
const INTEGER = /^\s*[+-]?\d+\s*$/;
const NUMBER = /^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$|^\s*[+-]?(nan|inf|infinity)\s*$/i;
const BOOLEAN = new Set(['t', 'true', 'f', 'false', 'y', 'yes', 'n', 'no', 'on', 'off', '1', '0']);
/** Beyond ±8.64e15 ms a JavaScript Date is invalid. */
const MAX_TIME_MS = 8.64e15;

/** The converter for a column of this type. */
export function converterFor(column: ColumnInfo): Converter {
  const convert = byType(column);
  return (value) => {
    if (value === undefined || value === null) {
      if (column.notNull) throw new ValueError('is missing (the message has none), and the column is NOT NULL', 'missing');
      return null;
    }
    return convert(value);
  };
}

function byType(column: ColumnInfo): (value: NonNullable<RawFieldValue>) => string {
  const type = column.baseType;
  if (type === 'json' || type === 'jsonb') return (value) => json(value, type === 'jsonb');
  if (type === 'bytea') return (value) => `\\x${Buffer.from(value instanceof Uint8Array ? value : text(value)).toString('hex')}`;
  if (type === 'uuid') return (value) => checked(scalar(value, 'a UUID'), UUID, 'a UUID');
  if (type === 'bool') return (value) => (typeof value === 'boolean' ? String(value) : boolean(scalar(value, 'a boolean')));
  const range = INT_RANGES[type];
  if (range !== undefined) return (value) => integer(value, range, type);
  if (type === 'numeric' || type === 'float4' || type === 'float8')
    return (value) => (typeof value === 'number' ? String(value) : checked(scalar(value, 'a number'), NUMBER, 'a number'));
  if (type === 'timestamptz' || type === 'timestamp' || type === 'date') {
    const iso = isoWriter();
    return (value) => time(value, iso);
  }
  return (value) => noNul(text(value));
}

/** The value as text: strings as they are, numbers and booleans written out, JSON objects and arrays as JSON, bytes as UTF-8. */
function text(value: NonNullable<RawFieldValue>): string {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (value instanceof Uint8Array) {
    try {
      return utf8.decode(value);
    } catch {
      throw new ValueError('is not UTF-8 text', 'encoding');
    }
  }
  return JSON.stringify(value);
}

/** A string, a number or the payload's text; a boolean, object or array is not `what`. */
function scalar(value: NonNullable<RawFieldValue>, what: string): string {
  // A number a double cannot hold, kept as the device wrote it (template.ts): its digits.
  if (isRawJson(value)) return value.rawJSON;
  if (typeof value === 'boolean' || (typeof value === 'object' && !(value instanceof Uint8Array))) throw new ValueError(`${describe(value)} is not ${what}`, 'form');
  return text(value);
}

function checked(value: string, pattern: RegExp, what: string): string {
  if (!pattern.test(value)) throw new ValueError(`${describe(value)} is not ${what}`, 'form');
  return value;
}

/** PostgreSQL text cannot hold NUL (U+0000). */
function noNul(value: string): string {
  if (value.includes('\u0000')) throw new ValueError('has a NUL character (U+0000), which PostgreSQL text cannot hold', 'nul');
  return value;
}

function json(value: NonNullable<RawFieldValue>, binary: boolean): string {
  if (!(value instanceof Uint8Array)) return noNul(JSON.stringify(value));
  const source = text(value);
  try {
    JSON.parse(source);
  } catch (error) {
    throw new ValueError(`is not JSON: ${(error as Error).message}`, 'form');
  }
  // jsonb stores strings as text, so it refuses an escaped NUL; json keeps the text as it is.
  if (binary && source.includes('\\u0000') && /(^|[^\\])(\\\\)*\\u0000/.test(source)) throw new ValueError('has \\u0000 in a string, which jsonb cannot hold', 'nul');
  return noNul(source);
}

function boolean(value: string): string {
  if (!BOOLEAN.has(value.trim().toLowerCase())) throw new ValueError(`${describe(value)} is not a boolean`, 'form');
  return value;
}

function integer(value: NonNullable<RawFieldValue>, [min, max]: readonly [bigint, bigint], type: string): string {
  let n: bigint;
  if (typeof value === 'number') {
    if (!Number.isInteger(value)) throw new ValueError(`${value} is not an integer`, 'form');
    n = BigInt(value);
  } else {
    const source = scalar(value, 'an integer');
    if (!INTEGER.test(source)) throw new ValueError(`${describe(source)} is not an integer`, 'form');
    n = BigInt(source.trim());
  }
  if (n < min || n > max) throw new ValueError(`${n} is out of the range of ${type} (${min} to ${max})`, 'range');
  return n.toString();
}

/** Numbers are milliseconds since the epoch; strings are left to the server (ISO 8601 and the other forms it reads). */
function time(value: NonNullable<RawFieldValue>, iso: (ms: number) => string): string {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || Math.abs(value) > MAX_TIME_MS) throw new ValueError(`${value} is not a time in milliseconds since the epoch`, 'range');
    return iso(value);
  }
  return noNul(scalar(value, 'a time'));
}

/** The most recent second of the epoch whose text `isoWriter` can reuse: to year 9999. */
const LAST_FOUR_DIGIT_MS = 253402300799999;

/**
 * `new Date(ms).toISOString()`, reusing the text up to the second from the call before:
 * messages arrive in time order, many in the same second.
 */
function isoWriter(): (ms: number) => string {
  let second = Number.NaN;
  let prefix = '';
  return (ms) => {
    if (!Number.isInteger(ms) || ms < 0 || ms > LAST_FOUR_DIGIT_MS) return new Date(ms).toISOString();
    const millis = ms % 1000;
    const s = ms - millis;
    if (s !== second) {
      second = s;
      prefix = new Date(s).toISOString().slice(0, 20); // 2026-12-04T08:00:51.
    }
    return `${prefix}${millis < 10 ? '00' : millis < 100 ? '0' : ''}${millis}Z`;
  };
}

/** A value in a message, short: a reason must not carry a whole payload. */
function describe(value: unknown): string {
  const shown = typeof value === 'string' ? JSON.stringify(value) : value instanceof Uint8Array ? 'the payload' : JSON.stringify(value);
  return shown.length > 60 ? `${shown.slice(0, 57)}...` : shown;
}
