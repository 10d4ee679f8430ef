// The binary text[] the sink sends: read back element by element, as PostgreSQL's array_recv does.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { textArray } from '../../../src/postgres/text-array.ts';

function readBack(buffer: Buffer): (string | null)[] {
  assert.equal(buffer.readInt32BE(0), 1, 'dimensions');
  assert.equal(buffer.readInt32BE(8), 25, 'element type: text');
  const count = buffer.readInt32BE(12);
  assert.equal(buffer.readInt32BE(16), 1, 'lower bound');
  const values: (string | null)[] = [];
  let at = 20;
  for (let i = 0; i < count; i++) {
    const length = buffer.readInt32BE(at);
    at += 4;
    if (length === -1) {
      values.push(null);
      continue;
    }
    values.push(buffer.toString('utf8', at, at + length));
    at += length;
  }
  assert.equal(at, buffer.length, 'bytes after the last element');
  return values;
}

test('textArray: ASCII, multi-byte UTF-8, surrogate pairs, empty strings and NULLs come back as they went, with nothing after them', () => {
  const values = ['plain', '', 'é', '温度', '🌡️ 21.5 °C', null, '{"a":"b\\"c"}', 'x'.repeat(10_000), '\\x00ff', null];
  const buffer = textArray(values);
  assert.deepEqual(readBack(buffer), values);
  assert.equal(buffer.readInt32BE(4), 1, 'has NULLs');
});

test('textArray: no NULLs, and no elements', () => {
  const some = textArray(['a', 'bc']);
  assert.equal(some.readInt32BE(4), 0, 'has NULLs');
  assert.deepEqual(readBack(some), ['a', 'bc']);
  assert.deepEqual(readBack(textArray([])), []);
});
