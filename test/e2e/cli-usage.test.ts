// A bad value of a numeric option (`ferry run --mqtt-port abc`, `ferry history -n 0`) ended the
// command with a stack trace from inside commander. Now it is a usage error naming the option.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ferry } from '../harness/ferry-process.ts';

for (const [args, option] of [
  // A config that is not there: a value the option took anyway (an empty one was port 0) starts nothing.
  [['run', '-c', 'no-such-gateway.yaml', '--mqtt-port', 'abc'], '--mqtt-port'],
  [['run', '-c', 'no-such-gateway.yaml', '--admin-port', '70000'], '--admin-port'],
  [['run', '-c', 'no-such-gateway.yaml', '--admin-port', ''], '--admin-port'],
  [['history', '-n', '0'], '--limit'],
  [['buffer', 'peek', '-n', 'ten'], '--limit'],
  [['retained', 'list', '--limit', '-1'], '--limit'],
] as const) {
  test(`ferry ${args.join(' ')}: a usage error naming ${option}, no stack trace`, { timeout: 30_000 }, async () => {
    const result = await ferry(args);
    assert.equal(result.code, 1);
    assert.equal(result.stdout, '');
    assert.match(result.stderr, new RegExp(`^error: option '[^']*${option} <[a-z]+>' argument '[^']*' is invalid\\. expected `));
    assert.doesNotMatch(result.stderr, /^\s+at /m);
  });
}
