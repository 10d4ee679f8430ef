// Two of the gateway's listeners on one port are a config problem at validation, not a start
// that fails to bind and blames another program.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { writeFileSync } from 'node:fs';
import { ConfigError, formatIssue } from '../../../src/config/issues.ts';
import { loadConfig } from '../../../src/config/load.ts';
import { componentKinds } from '../../../src/runtime/registry.ts';
import { tempDirs } from '../../harness/temp.ts';

const tempDir = tempDirs('ferry-listener-ports-');

/** The problems of a gateway.yaml with these `mqtt` and `admin` sections. */
function problems(mqtt: string, admin: string): string[] {
  const root = tempDir();
  writeFileSync(join(root, 'gateway.yaml'), `mqtt: ${mqtt}\nadmin: ${admin}\nbridges: []\ndevices: []\n`);
  try {
    loadConfig(join(root, 'gateway.yaml'), { kinds: componentKinds, env: {}, cwd: root });
    return [];
  } catch (error) {
    assert.ok(error instanceof ConfigError, String(error));
    return error.issues.map(formatIssue);
  }
}

test('a port two listeners share is refused, naming both; distinct addresses, free ports (0) and a disabled admin server are fine', () => {
  const [same] = problems('{port: 19931, allowAnonymous: true}', '{port: 19931}');
  assert.match(same ?? '', /admin\.port: port 19931 is mqtt\.port's too: each listener needs a port of its own/);
  const [websocket] = problems('{port: 1883, allowAnonymous: true, websocket: {port: 1883}}', '{}');
  assert.match(websocket ?? '', /mqtt\.websocket\.port: port 1883 is mqtt\.port's too/);
  assert.deepEqual(problems('{host: 10.0.0.1, port: 9180, allowAnonymous: true}', '{host: 127.0.0.1, port: 9180}'), [], 'two addresses, one port');
  assert.deepEqual(problems('{port: 0, allowAnonymous: true}', '{port: 0}'), [], 'free ports');
  assert.deepEqual(problems('{port: 19931, allowAnonymous: true}', '{enabled: false, port: 19931}'), [], 'no admin server');
});
