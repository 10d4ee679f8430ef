// The README sends a newcomer whose port 1883 is taken (by Mosquitto) to --mqtt-port. The hint
// was there, but the log line above it carried the error's stack: some 25 lines of Ferry's and
// Node's internals in a terminal, for a mistake the operator fixes with a flag.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { test } from 'node:test';
import { ferry } from '../harness/ferry-process.ts';
import { tempDirs } from '../harness/temp.ts';

const dataDir = tempDirs('ferry-cli-port-taken-');

test('a taken MQTT port: the fatal log line has the code and the cause, no stack; the hint names --mqtt-port', { timeout: 60_000 }, async () => {
  const blocker = createServer();
  blocker.listen(0, '127.0.0.1');
  await once(blocker, 'listening');
  const port = (blocker.address() as { port: number }).port;
  try {
    const result = await ferry(['run', '--config', 'config/gateway.yaml', '--data-dir', dataDir(), '--mqtt-port', String(port), '--admin-port', '0']);
    assert.equal(result.code, 1);
    assert.match(result.stderr, new RegExp(`^ferry: MQTT port ${port} .* already in use: another program holds it; choose a free port with --mqtt-port`, 'm'));
    const lines = result.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const fatal = lines.find((l) => l['level'] === 60);
    assert.ok(fatal !== undefined, result.stdout);
    assert.match(String(fatal['msg']), /--mqtt-port/);
    assert.equal(fatal['code'], 'PORT_IN_USE');
    assert.match(String(fatal['cause']), /EADDRINUSE/);
    assert.equal(fatal['err'], undefined);
    assert.doesNotMatch(result.stdout + result.stderr, /\bat .*\.js:\d+:\d+/);
  } finally {
    blocker.close();
  }
});
