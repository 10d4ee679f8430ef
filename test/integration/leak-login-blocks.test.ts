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
