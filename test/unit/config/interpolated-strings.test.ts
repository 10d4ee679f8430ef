// An unquoted `${VAR}` whose value YAML reads as a number, a boolean or null: a field that
// takes a string gets the value as it is (FERRY_TOKEN=12345 with `token: ${FERRY_TOKEN}`),
// while numeric and boolean settings still get numbers and booleans.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, test } from 'node:test';
import { ConfigError, formatIssue } from '../../../src/config/issues.ts';
import { z } from 'zod';
import { validateFile } from '../../../src/config/validate-file.ts';
import { type TypedText, loadYamlFile } from '../../../src/config/yaml-file.ts';
import { type GatewayConfig, loadConfig } from '../../../src/config/load.ts';
import { loadProfile } from '../../../src/cli/simulate/profile.ts';
import { componentKinds } from '../../../src/runtime/registry.ts';

const roots: string[] = [];
after(() => roots.forEach((r) => rmSync(r, { recursive: true, force: true })));

function tree(files: Record<string, string>): string {
  const root = mkdtempSync(join(tmpdir(), 'ferry-interpolated-'));
  roots.push(root);
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  return root;
}

const GATEWAY = `gateway:
  name: \${NAME}
mqtt:
  port: \${PORT:-1883}
admin:
  token: \${FERRY_TOKEN}
bridges: [bridges]
devices: []
`;

const EXTERNAL = `name: ext
enabled: \${ON:-true}
from:
  mqttClient:
    url: mqtt://127.0.0.1:1883
    clientId: \${CLIENT_ID}
    username: \${MQTT_USER}
    password: \${MQTT_PASSWORD:-}
    keepaliveSec: \${KEEPALIVE:-30}
    topics:
      - \${TOPIC}
to:
  - history: {}
`;

const root = tree({ 'gateway.yaml': GATEWAY, 'bridges/ext.yaml': EXTERNAL });

function load(env: Record<string, string | undefined>): GatewayConfig {
  return loadConfig(join(root, 'gateway.yaml'), {
    kinds: componentKinds,
    env: { NAME: 'gw', FERRY_TOKEN: 'x'.repeat(16), CLIENT_ID: 'c', MQTT_USER: 'u', TOPIC: 't/#', ...env },
    cwd: root,
  });
}

function problems(env: Record<string, string | undefined>): string[] {
  try {
    load(env);
  } catch (error) {
    assert.ok(error instanceof ConfigError, String(error));
    return error.issues.map(formatIssue);
  }
  assert.fail('expected the config to be refused');
}

const client = (config: GatewayConfig) => (config.bridgeConfigs[0]?.from as { mqttClient: Record<string, unknown> }).mqttClient;

test('a string field gets the text of a variable that YAML would read as a number, boolean or null', () => {
  for (const token of ['1234567890123456789', '0123456789012345', '1e30000000000000', '0x1F00000000000000', '1_000_000_000_000']) {
    assert.equal(load({ FERRY_TOKEN: token }).adminToken, token, `token ${token}`);
  }
  for (const value of ['12345', '0123', '1e3', '0x1F', '0o17', '.inf', '-.5', 'true', 'false', 'null', '~', 'yes', 'off']) {
    const config = load({ NAME: value, CLIENT_ID: value, MQTT_USER: value, MQTT_PASSWORD: value, TOPIC: value });
    assert.equal(config.gateway.name, value);
    const mqttClient = client(config);
    assert.deepEqual([mqttClient['clientId'], mqttClient['username'], mqttClient['password'], mqttClient['topics']], [value, value, value, [value]], value);
  }
  // `${VAR:-}` in a string field is the empty string, not null.
  assert.equal(client(load({}))['password'], '');
});

test('numeric and boolean settings still get numbers and booleans; a value that is neither is refused there', () => {
  const config = load({ PORT: '1884', KEEPALIVE: '0123', ON: 'true' });
  assert.equal(config.mqtt.port, 1884);
  assert.equal(client(config)['keepaliveSec'], 123);
  assert.equal(config.bridgeConfigs[0]?.enabled, true);
  assert.equal(load({ ON: 'false' }).bridgeConfigs[0]?.enabled, false);
  assert.deepEqual(problems({ PORT: 'abc', FERRY_TOKEN: '12345' }), [
    'gateway.yaml:4:9: mqtt.port: expected a number; ${PORT} gave text that is not one',
    'gateway.yaml:6:10: admin.token: an admin token needs at least 16 characters',
  ]);
});

test('an unset variable in a list is reported once, at its index', () => {
  assert.deepEqual(
    problems({ TOPIC: undefined }).filter((p) => p.includes('TOPIC')),
    ['bridges/ext.yaml:11:9: from.mqttClient.topics[0]: environment variable TOPIC is not set (give a default with ${TOPIC:-value})'],
  );
});

test('`ferry simulate --profile` reads a device profile the same way', (t) => {
  const dir = tree({ 'sensor.yaml': 'name: ${PROFILE_NAME}\nclientId: sensor-*\ntelemetry:\n  topic: t/%c\n  intervalMs: ${INTERVAL_MS}\n  fields:\n    x: {min: 0, max: 1}\n' });
  process.env['PROFILE_NAME'] = '2024';
  process.env['INTERVAL_MS'] = '250';
  t.after(() => {
    delete process.env['PROFILE_NAME'];
    delete process.env['INTERVAL_MS'];
  });
  const profile = loadProfile(join(dir, 'sensor.yaml'));
  assert.equal(profile.name, '2024');
  assert.equal(profile.telemetry.intervalMs, 250);
});

// A quoted `port: "${PORT}"` stayed the text "1884", which the port refused ("expected number,
// received string"), while the editor schema (`ferry config schema`) takes a `${VAR}` string in
// a number or boolean setting, quoted or not. Now such a setting takes the number or boolean the
// text reads as, and text that reads as neither is refused naming the variable.
test('a quoted ${VAR} in a number or boolean setting is the number or boolean its text reads as; other text is refused naming the variable', () => {
  const quoted = tree({
    'gateway.yaml': GATEWAY.replace('port: ${PORT:-1883}', 'port: "${PORT:-1883}"'),
    'bridges/ext.yaml': EXTERNAL.replace('enabled: ${ON:-true}', "enabled: '${ON:-true}'").replace('keepaliveSec: ${KEEPALIVE:-30}', 'keepaliveSec: "${KEEPALIVE}"'),
  });
  const loadQuoted = (env: Record<string, string>) =>
    loadConfig(join(quoted, 'gateway.yaml'), {
      kinds: componentKinds,
      env: { NAME: 'gw', FERRY_TOKEN: 'x'.repeat(16), CLIENT_ID: 'c', MQTT_USER: 'u', TOPIC: 't/#', KEEPALIVE: '45', ...env },
      cwd: quoted,
    });
  const config = loadQuoted({ PORT: '1884', ON: 'false' });
  assert.equal(config.mqtt.port, 1884);
  assert.equal(config.bridgeConfigs[0]?.enabled, false);
  assert.equal(client(config)['keepaliveSec'], 45);
  assert.equal(loadQuoted({}).mqtt.port, 1883, 'the default');
  // A string setting quoted keeps its text, as before.
  assert.equal(loadQuoted({ NAME: '2024' }).gateway.name, '2024');
  let refused: string[] = [];
  try {
    loadQuoted({ PORT: '18 84', ON: 'maybe', KEEPALIVE: '' });
  } catch (error) {
    assert.ok(error instanceof ConfigError, String(error));
    refused = error.issues.map(formatIssue);
  }
  assert.deepEqual(refused, [
    'gateway.yaml:4:9: mqtt.port: expected a number; ${PORT} gave text that is not one',
    'bridges/ext.yaml:2:10: enabled: expected true or false; ${ON} gave text that is neither',
    'bridges/ext.yaml:9:19: from.mqttClient.keepaliveSec: expected a number; ${KEEPALIVE} gave text that is not one',
  ]);
});

test('a number written quoted without a ${VAR} is still refused, as the editor schema refuses it', () => {
  const literal = tree({ 'gateway.yaml': GATEWAY.replace('port: ${PORT:-1883}', 'port: "1884"'), 'bridges/ext.yaml': EXTERNAL });
  assert.throws(
    () =>
      loadConfig(join(literal, 'gateway.yaml'), {
        kinds: componentKinds,
        env: { NAME: 'gw', FERRY_TOKEN: 'x'.repeat(16), CLIENT_ID: 'c', MQTT_USER: 'u', TOPIC: 't/#' },
        cwd: literal,
      }),
    (error: unknown) => error instanceof ConfigError && error.issues.map(formatIssue).join('\n') === 'gateway.yaml:4:9: mqtt.port: expected number, received string',
  );
});

// An anchored value repeated through an alias (`username: *id`) is the same node in YAML: the
// alias got the anchor's typed value, but only the anchor's place was known to have been
// interpolated, so a string field reached through the alias got 7 for `CLIENT_ID=007`, and a
// number setting reached through one was refused for a quoted `"${DELAY}"`.
test('a ${VAR} repeated through a YAML alias is read at the alias as at its anchor, in a map or list anchored too', () => {
  const aliased = tree({
    'gateway.yaml': GATEWAY,
    'bridges/ext.yaml': EXTERNAL.replace('clientId: ${CLIENT_ID}', 'clientId: &id ${CLIENT_ID}')
      .replace('username: ${MQTT_USER}', 'username: *id')
      .replace('keepaliveSec: ${KEEPALIVE:-30}', 'keepaliveSec: &delay "${DELAY}"\n    reconnectMinMs: *delay'),
  });
  const config = loadConfig(join(aliased, 'gateway.yaml'), {
    kinds: componentKinds,
    env: { NAME: 'gw', FERRY_TOKEN: 'x'.repeat(16), CLIENT_ID: '007', TOPIC: '2024', DELAY: '45' },
    cwd: aliased,
  }).bridgeConfigs[0];
  assert.ok(config !== undefined);
  const mqttClient = (config.from as { mqttClient: Record<string, unknown> }).mqttClient;
  assert.deepEqual([mqttClient['clientId'], mqttClient['username'], mqttClient['keepaliveSec'], mqttClient['reconnectMinMs']], ['007', '007', 45, 45]);

  // Aliases of a map or a list, and of an alias inside one, carry each interpolated value's place.
  const file = loadYamlFile(join(tree({ 'a.yaml': 'a: &m\n  x: ${ID}\n  y:\n    - &q "${ID}"\nb: *m\nc:\n  - *m\n  - *q\n' }), 'a.yaml'), 'a.yaml', { ID: '007' }).file;
  const paths = (texts: readonly TypedText[] | undefined) => (texts ?? []).map((t) => t.path.join('.')).sort();
  assert.deepEqual(paths(file?.typedTexts), ['a.x', 'b.x', 'c.0.x']);
  assert.deepEqual(paths(file?.interpolatedTexts), ['a.y.0', 'b.y.0', 'c.0.y.0', 'c.1']);
});

// Keys are not interpolated: an alias used as a key (`*id : 5`) is no place of the anchor's
// value. Taken for one, the map holding it was the alias's place, and a string setting written
// as such a map took the anchor's text instead of being refused.
test('an alias used as a key is not taken for a place of the interpolated value it repeats', () => {
  const path = join(tree({ 'k.yaml': 'a: &id ${ID}\nname:\n  *id : 5\n' }), 'k.yaml');
  const file = loadYamlFile(path, 'k.yaml', { ID: '007' }).file;
  assert.ok(file !== undefined);
  const { result } = validateFile(file, z.object({ a: z.string(), name: z.string() }));
  assert.equal(result.success, false, 'a map written for a string setting is refused');
  assert.deepEqual(
    result.error?.issues.map((i) => i.path.join('.')),
    ['name'],
  );
  assert.deepEqual(
    file.typedTexts?.map((t) => t.path.join('.')),
    ['a'],
  );
});
