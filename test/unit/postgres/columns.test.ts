import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { RawFieldValue } from '../../../src/core/template.ts';
import { type ColumnInfo, ValueError, converterFor } from '../../../src/postgres/columns.ts';

const column = (baseType: string, notNull = false): ColumnInfo => ({ name: 'c', castType: baseType, declaredType: baseType, baseType, category: 'X', notNull });
const convert = (type: string, value: RawFieldValue, notNull = false) => converterFor(column(type, notNull))(value);
const refused = (type: string, value: RawFieldValue, reason: RegExp) =>
  assert.throws(
    () => convert(type, value),
    (e: unknown) => e instanceof ValueError && reason.test(e.message),
    `${type} ${String(value)}`,
  );
const bytes = (text: string) => Buffer.from(text);

test("values become the text each type's input function reads", () => {
  const at = Date.UTC(2026, 10, 24, 2, 41, 7, 112);
  const cases: [string, RawFieldValue, string | null][] = [
    ['text', 'a\'b"c', 'a\'b"c'],
    ['text', 21.5, '21.5'],
    ['text', true, 'true'],
    ['text', { a: [1] }, '{"a":[1]}'],
    ['text', bytes('héllo'), 'héllo'],
    ['varchar', 'x', 'x'],
    ['jsonb', bytes('{"a": 1}'), '{"a": 1}'],
    ['jsonb', 'pump-1', '"pump-1"'],
    ['jsonb', 3, '3'],
    ['json', { a: null }, '{"a":null}'],
    ['bytea', Uint8Array.from([0, 255, 39]), '\\x00ff27'],
    ['bytea', 'ab', '\\x6162'],
    ['uuid', '0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b', '0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b'],
    ['bool', true, 'true'],
    ['bool', 'off', 'off'],
    ['int4', 42, '42'],
    ['int4', '-7', '-7'],
    ['int8', 9007199254740991, '9007199254740991'],
    ['int8', '9223372036854775807', '9223372036854775807'],
    ['int2', bytes('12'), '12'],
    ['numeric', 1e21, '1e+21'],
    ['numeric', '3.25', '3.25'],
    ['float8', 'NaN', 'NaN'],
    ['timestamptz', at, '2026-11-24T02:41:07.112Z'],
    ['timestamp', '2026-11-24 02:41:07', '2026-11-24 02:41:07'],
    ['date', at, '2026-11-24T02:41:07.112Z'],
    ['inet', '10.0.0.1', '10.0.0.1'],
    ['text', undefined, null],
    ['jsonb', null, null],
  ];
  for (const [type, value, expected] of cases) assert.equal(convert(type, value), expected, `${type} ${String(value)}`);
});

test('a time column writes each millisecond as toISOString does, with the text up to the second reused', () => {
  const time = converterFor(column('timestamptz'));
  const start = Date.UTC(2026, 11, 31, 23, 59, 58, 990);
  // Across seconds, minutes, a year, forward and back; before 1970, past 9999 and fractions
  // take toISOString itself.
  const values = [...Array.from({ length: 2100 }, (_, i) => start + i), start - 5, start + 1005, 0, 999, 1000, -1, -1001, 1.5, 253402300799999, 253402300800000, 8.64e15];
  for (const ms of values) assert.equal(time(ms), new Date(ms).toISOString(), String(ms));
});

test('values that cannot fit are refused with the reason, before any statement', () => {
  refused('jsonb', bytes('{"a": oops}'), /^is not JSON: /);
  refused('jsonb', bytes('{"a":"\\u0000"}'), /\\u0000 in a string, which jsonb cannot hold/);
  assert.equal(convert('json', bytes('{"a":"\\u0000"}')), '{"a":"\\u0000"}');
  assert.equal(convert('jsonb', bytes('{"a":"\\\\u0000"}')), '{"a":"\\\\u0000"}', 'an escaped backslash before u0000 is text');
  refused('text', bytes('\u0000'), /NUL character/);
  refused('text', 'a\u0000b', /NUL character/);
  refused('text', Uint8Array.from([0xff, 0xfe]), /is not UTF-8 text/);
  refused('uuid', 'not-a-uuid', /"not-a-uuid" is not a UUID/);
  refused('uuid', 12, /"12" is not a UUID/);
  refused('int4', 'three', /"three" is not an integer/);
  refused('int4', 1.5, /1\.5 is not an integer/);
  refused('int4', true, /true is not an integer/);
  refused('int2', 40000, /40000 is out of the range of int2/);
  refused('int8', '9223372036854775808', /out of the range of int8/);
  refused('numeric', 'lots', /"lots" is not a number/);
  refused('numeric', { a: 1 }, /\{"a":1\} is not a number/);
  refused('bool', 'maybe', /"maybe" is not a boolean/);
  refused('timestamptz', 1e17, /is not a time in milliseconds/);
  refused('timestamptz', { at: 1 }, /is not a time/);
  assert.throws(() => convert('text', undefined, true), /is missing \(the message has none\), and the column is NOT NULL/);
  refused('text', `${'x'.repeat(100)}\u0000`, /NUL/);
  refused('int4', 'y'.repeat(100), /^"y{56}\.\.\. is not an integer$/);
});
