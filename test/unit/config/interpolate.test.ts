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
