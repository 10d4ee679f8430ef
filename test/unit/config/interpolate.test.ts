import assert from 'node:assert/strict';
import { test } from 'node:test';
import { interpolate } from '../../../src/config/interpolate.ts';

test('interpolates ${VAR}, ${VAR:-default}, ${VAR:+word} and $${ escapes', () => {
  const env = { HOST: 'kafka', EMPTY: '' };
  assert.deepEqual(interpolate('${HOST}:9092', env), { value: 'kafka:9092', missing: [] });
  assert.deepEqual(interpolate('${PORT:-9092}', env), { value: '9092', missing: [] });
  assert.deepEqual(interpolate('${EMPTY:-x}', env), { value: 'x', missing: [] });
  assert.deepEqual(interpolate('${HOST:+on}/${NOPE:+on}', env), { value: 'on/', missing: [] });
  assert.deepEqual(interpolate('$${HOST}', env), { value: '${HOST}', missing: [] });
  assert.deepEqual(interpolate('${EMPTY}', env), { value: '', missing: [] });
  assert.deepEqual(interpolate('a ${NOPE} b ${ALSO}', env), { value: 'a  b ', missing: ['NOPE', 'ALSO'] });
});

test('a default or word is interpolated in turn, braces matched: ${DATA:-${HOME}/ferry} nests as in a shell', () => {
  const env = { HOME: '/home/op', SET: 'x', EMPTY: '' };
  assert.deepEqual(interpolate('${DATA:-${HOME}/ferry-data}', env), { value: '/home/op/ferry-data', missing: [] });
  assert.deepEqual(interpolate('${SET:-${HOME}}', env), { value: 'x', missing: [] }, 'a default not used is not read');
  assert.deepEqual(interpolate('${SET:+${HOME}/on}|${EMPTY:+${HOME}}', env), { value: '/home/op/on|', missing: [] });
  assert.deepEqual(interpolate('${A:-${B:-${HOME}}}', env), { value: '/home/op', missing: [] });
  assert.deepEqual(interpolate('${A:-${NOPE}}', env), { value: '', missing: ['NOPE'] });
  // A message template and an escape inside a default stay as they are.
  assert.deepEqual(interpolate('${TOPIC:-devices/${clientId}/x}', env), { value: 'devices/${clientId}/x', missing: [] });
  assert.deepEqual(interpolate('${A:-$${HOME}}', env), { value: '${HOME}', missing: [] });
  // A default never closed is left as it is, and what is inside it still interpolates.
  assert.deepEqual(interpolate('${A:-${HOME}', env), { value: '${A:-/home/op', missing: [] });
});
