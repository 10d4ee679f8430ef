import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FerryError } from '../../../src/core/errors.ts';
import { failedWhileStopping } from '../../../src/runtime/handler-faults.ts';

test("a handler failing while its bridge stops: the error keeps its own code (the bridge code's mistake), a plain one is the handler's; all are retryable", () => {
  const mistake = new FerryError('CONFIG_INVALID', "bridge 'h': the handler emitted a number");
  const kept = failedWhileStopping('h', mistake);
  assert.equal(kept.code, 'CONFIG_INVALID');
  assert.equal(kept.retryable, true, 'its messages stay buffered, none dead-lettered');
  assert.equal(kept.cause, mistake);
  const thrown = failedWhileStopping('h', new Error('boom'));
  assert.equal(thrown.code, 'MESSAGE_REJECTED');
  assert.equal(thrown.retryable, true);
  assert.equal(thrown.message, "the handler of bridge 'h' failed while stopping: boom");
});
