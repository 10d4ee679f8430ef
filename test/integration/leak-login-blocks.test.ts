// Memory of blocked logins: the failed-login and connection-rate limits (WindowLimiter) block a
// key (an address and username, an address) for a while. A key that is blocked is seldom seen
// again (a guessed username, an address that moved on), so its block must be forgotten once it
// is over even when nothing else is counted. Driven directly, with its clock given: the same
// through the broker takes a password check (a scrypt) per failure, minutes for 20,000 keys.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { WindowLimiter } from '../../src/mqtt/rate-limit.ts';

test('keys blocked once and never seen again are forgotten after their block: memory stays bounded', () => {
  // As mqtt.maxAuthFailures: 1 would: every failure blocks its key.
  const limiter = new WindowLimiter({ max: 1, windowMs: 60_000, blockMs: 1_000 });
  let largest = 0;
  for (let i = 0; i < 30_000; i++) {
    // One new username every 10 ms: about 100 blocked at any moment.
    assert.equal(limiter.record(`127.0.0.1\u0000username\u0000guess-${i}`, i * 10), true);
    largest = Math.max(largest, limiter.size);
  }
  assert.ok(largest <= 10_001, `${largest} keys remembered with about 100 blocked at once`);
  // Still blocked: the latest key, whose block is not over.
  assert.equal(limiter.blocked('127.0.0.1\u0000username\u0000guess-29999', 299_999), true);
});

test('a flood of keys all still blocked is swept once per doubling, not once per new key', () => {
  // 40,000 usernames guessed within one blockMs: none of their blocks is over, so a sweep frees
  // nothing. The work is counted as the sweeps the limiter makes (each walks its two Maps), not
  // timed: a sweep on every new key past 10,000 made 30,000 of them, O(keys) each.
  const limiter = new WindowLimiter({ max: 1, windowMs: 60_000, blockMs: 3_600_000 });
  const iterate = Map.prototype[Symbol.iterator];
  let walks = 0;
  Map.prototype[Symbol.iterator] = function (this: Map<unknown, unknown>) {
    walks++;
    return iterate.call(this);
  };
  try {
    for (let i = 0; i < 40_000; i++) limiter.record(`127.0.0.1\u0000username\u0000guess-${i}`, i);
  } finally {
    Map.prototype[Symbol.iterator] = iterate;
  }
  assert.ok(walks > 0, 'the limiter swept at all (else this test measures nothing)');
  assert.ok(walks <= 2 * 4, `${walks} walks of the limiter's Maps for 40,000 keys blocked (at most 4 sweeps: at 10k, 20k, 40k keys)`);
  // Nothing was forgotten early: every block is still on.
  assert.equal(limiter.size, 40_000);
  assert.equal(limiter.blocked('127.0.0.1\u0000username\u0000guess-0', 40_000), true);
});
