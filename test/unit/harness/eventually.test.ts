import assert from 'node:assert/strict';
import { test } from 'node:test';
import { eventually } from '../../harness/eventually.ts';

test('eventually returns the value of the first attempt that passes', async () => {
  let calls = 0;
  const value = await eventually(
    () => {
      calls += 1;
      assert.ok(calls >= 3, `only ${calls} calls`);
      return calls;
    },
    { intervalMs: 1 },
  );
  assert.equal(value, 3);
});

test('eventually retries async assertions too', async () => {
  let calls = 0;
  await eventually(
    async () => {
      calls += 1;
      await Promise.resolve();
      assert.equal(calls, 2);
    },
    { intervalMs: 1 },
  );
  assert.equal(calls, 2);
});

test('eventually throws the last assertion error, saying how long it waited', async () => {
  let calls = 0;
  const error = await eventually(
    () => {
      calls += 1;
      assert.equal(calls, 0, `attempt ${calls}`);
    },
    { timeoutMs: 100, intervalMs: 10 },
  ).then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.ok(error instanceof assert.AssertionError, String(error));
  assert.match(error.message, /^still failing after \d+ ms \(\d+ attempts\): attempt \d+\b/);
  assert.match(String(error.stack), /^AssertionError \[ERR_ASSERTION\]: still failing after/);
  assert.ok(error.message.includes(`: attempt ${calls}\n`), `not the last error: ${error.message}`);
  assert.ok(calls >= 5, `only ${calls} attempts in 100 ms`);
});

test('eventually gives up on an attempt that hangs past the deadline', async () => {
  const started = performance.now();
  await assert.rejects(
    eventually(() => new Promise<void>(() => {}), { timeoutMs: 50 }),
    /still failing after \d+ ms \(1 attempts\): the last attempt was still running/,
  );
  assert.ok(performance.now() - started < 1000);
});
