// `ferry validate` with a quoted `${VAR}` in a number setting (`port: "${MQTT_PORT}"`): the
// built CLI takes the number the variable holds, and refuses other text naming the variable,
// not its value.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { ferry } from '../harness/ferry-process.ts';

test('ferry validate takes port: "${MQTT_PORT}" as the number it holds, and names the variable when it holds none', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'ferry-validate-env-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const gateway = join(root, 'gateway.yaml');
  writeFileSync(gateway, 'mqtt:\n  port: "${MQTT_PORT:-1883}"\nbridges: []\ndevices: []\n');

  const ok = await ferry(['validate', '--config', gateway], { MQTT_PORT: '1884' });
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /gateway\.yaml: ok/);

  const refused = await ferry(['validate', '--config', gateway], { MQTT_PORT: 'secret-host:1884' });
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /gateway\.yaml:2:9: mqtt\.port: expected a number; \$\{MQTT_PORT\} gave text that is not one/);
  assert.doesNotMatch(refused.stdout + refused.stderr, /secret-host/);
});
