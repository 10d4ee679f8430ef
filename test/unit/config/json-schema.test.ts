// The JSON Schema of `ferry config schema`, checked with ajv as an editor would: the shipped
// configs (which use `${VAR}` in typed settings) validate, and literal values are checked as strictly as before.
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { parse } from 'yaml';
import { type ConfigFileKind, configJsonSchema } from '../../../src/config/json-schema.ts';
import { componentKinds } from '../../../src/runtime/registry.ts';

function validator(kind: ConfigFileKind): (value: unknown) => string[] {
  const ajv = new Ajv2020({ strict: true, allErrors: true, validateFormats: false, logger: false });
  const validate = ajv.compile(configJsonSchema(kind, componentKinds));
  return (value) => (validate(value) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath} ${e.message}`));
}

const yamlFiles = (dir: string) =>
  readdirSync(dir)
    .filter((f) => /\.ya?ml$/.test(f))
    .map((f) => join(dir, f));

test('the shipped gateway, bridge and device files validate against the exported schemas', () => {
  const cases: [ConfigFileKind, string[]][] = [
    ['gateway', ['config/gateway.yaml']],
    ['bridge', yamlFiles('bridges')],
    ['device', yamlFiles('devices')],
  ];
  for (const [kind, files] of cases) {
    const validate = validator(kind);
    assert.ok(files.length > 0);
    for (const file of files) assert.deepEqual(validate(parse(readFileSync(file, 'utf8'))), [], file);
  }
});

test('a ${VAR} is taken in a number, a boolean, an enum and a constrained string; literals are checked as before', () => {
  const gateway = validator('gateway');
  for (const port of ['${MQTT_PORT}', '${MQTT_PORT:-1883}', 'x${A}', '${MQTT_PORT:+1884}']) assert.deepEqual(gateway({ mqtt: { port } }), [], port);
  assert.deepEqual(gateway({ mqtt: { port: 1883 } }), []);
  assert.deepEqual(gateway({ admin: { token: '${ADMIN_TOKEN}', host: '0.0.0.0', openMetrics: '${OPEN_METRICS:-false}' } }), []);
  assert.deepEqual(gateway({ log: { level: '${LOG_LEVEL:-info}' } }), []);

  // Literal values, and strings that Ferry does not interpolate (an escaped `$${`, a message template), are refused as before.
  for (const port of ['abc', 70000, -1, '1883', '$${MQTT_PORT}', '${mqtt_port}', '${1}', '${MQTT_PORT']) {
    assert.notDeepEqual(gateway({ mqtt: { port } }), [], `port ${JSON.stringify(port)} should be refused`);
  }
  assert.notDeepEqual(gateway({ admin: { token: 'too-short' } }), []);
  assert.notDeepEqual(gateway({ log: { level: 'loud' } }), []);
  assert.notDeepEqual(gateway({ mqtt: { bogus: '${X}' } }), [], 'an unknown key stays an error');

  const bridge = validator('bridge');
  const external = (extra: Record<string, unknown>) => ({
    name: 'ext',
    from: { mqttClient: { url: 'mqtt://broker:1883', clientId: 'gw-1', topics: ['a/#'], ...extra } },
    to: [{ history: {} }],
  });
  assert.deepEqual(bridge(external({ url: '${BROKER_URL}', protocolVersion: '${MQTT_VERSION:-5}', keepaliveSec: '${KEEPALIVE}' })), []);
  assert.notDeepEqual(bridge(external({ protocolVersion: 3 })), []);
  assert.notDeepEqual(bridge(external({ url: 'http://broker' })), []);
});
