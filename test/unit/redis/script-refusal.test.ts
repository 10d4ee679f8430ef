import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ReplyError } from 'ioredis';
import { isCommandError, isServerRefusal } from '../../../src/redis/clients.ts';

// Redis before 7 wraps a refusal met inside a script (the rate limit's token script writing to a
// full server) in the script's error, where Redis 7 replies with the refusal itself. Only Redis 7
// runs on this machine, so these are the literal replies of Redis 6's scripting code
// (evalGenericCommand's "Error running script (call to %s): %s", the error handler's
// "source:line: " and luaPushError's "source: line: " before the shared reply), as ioredis hands
// them over: a ReplyError without the leading "-".
const reply = (message: string): Error => new ReplyError(message) as Error;
const SHA = 'f_9f5e7b0a6cbb8e0d63fb8c1bd64d1f7e91b1c0e2';

test("a refusal of every write wrapped in a Redis 6 script error is a server refusal, not the key's", () => {
  for (const message of [
    `ERR Error running script (call to ${SHA}): @user_script:24: @user_script: 24: -OOM command not allowed when used memory > 'maxmemory'.`,
    `ERR Error running script (call to ${SHA}): @user_script:24: @user_script: 24: -READONLY You can't write against a read only replica.`,
    `ERR Error running script (call to ${SHA}): @user_script:24: @user_script: 24: -MISCONF Redis is configured to save RDB snapshots, but it is currently not able to persist on disk. Commands that may modify the data set are disabled, because this instance is configured to report errors during writes if RDB snapshotting fails (stop-writes-on-bgsave-error option). Please check the Redis logs for details about the RDB error.`,
    `ERR Error running script (call to ${SHA}): @user_script:24: @user_script: 24: -NOREPLICAS Not enough good replicas to write.`,
    // Redis 7's own reply, for comparison.
    "OOM command not allowed when used memory > 'maxmemory'.",
  ]) {
    assert.equal(isServerRefusal(reply(message)), true, message);
    assert.equal(isCommandError(reply(message)), false, message);
  }
});

test("a script error about the key or the script itself stays the command's", () => {
  for (const message of [
    `ERR Error running script (call to ${SHA}): @user_script:9: WRONGTYPE Operation against a key holding the wrong kind of value`,
    `ERR Error running script (call to ${SHA}): @user_script:3: Script attempted to access nonexistent global variable 'OOM'`,
  ]) {
    assert.equal(isServerRefusal(reply(message)), false, message);
    assert.equal(isCommandError(reply(message)), true, message);
  }
});
