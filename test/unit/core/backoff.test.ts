import assert from 'node:assert/strict';
import { test } from 'node:test';
import { backoffDelay } from '../../../src/core/backoff.ts';

test('backoff doubles per attempt up to its maximum, and jitter spreads it both ways', () => {
  const b = { initialMs: 100, maxMs: 1000 };
  assert.deepEqual(
    [1, 2, 3, 4, 5, 100].map((n) => backoffDelay(b, n)),
    [100, 200, 400, 800, 1000, 1000],
  );
  assert.equal(backoffDelay(b, 0), 100, 'attempt 0 counts as the first');
  const j = { ...b, jitter: 0.2 };
  assert.equal(
    backoffDelay(j, 1, () => 0),
    80,
  );
  assert.equal(
    backoffDelay(j, 1, () => 1),
    120,
  );
  assert.equal(
    backoffDelay(j, 3, () => 0.5),
    400,
  );
});
