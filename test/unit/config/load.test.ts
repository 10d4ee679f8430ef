import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { after, test } from 'node:test';
import { z } from 'zod';
import { ConfigError, formatIssue } from '../../../src/config/issues.ts';
import { loadConfig } from '../../../src/config/load.ts';
import { bridgeSchema, gatewaySchema } from '../../../src/config/schema.ts';
import { componentKinds } from '../../../src/runtime/registry.ts';

const roots: string[] = [];
after(() => roots.forEach((r) => rmSync(r, { recursive: true, force: true })));

/** Writes files (path → text) into a fresh directory and returns it. */
function tree(files: Record<string, string>): string {
  const root = mkdtempSync(join(tmpdir(), 'ferry-config-'));
  roots.push(root);
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  return root;
}

function problems(root: string, env: Record<string, string> = {}): string[] {
  try {
    loadConfig(join(root, 'config/gateway.yaml'), { kinds: componentKinds, env, cwd: root });
  } catch (error) {
    assert.ok(error instanceof ConfigError, String(error));
    assert.equal(error.code, 'CONFIG_INVALID');
    return error.issues.map(formatIssue);
  }
  assert.fail('expected the config to be refused');
}

const history = 'name: h\nfrom:\n  mqtt:\n    topics: [devices/+/telemetry/#]\nto:\n  - history: {}\n';

test('the shipped example config validates, with and without KAFKA_BROKERS', () => {
  const plain = loadConfig('config/gateway.yaml', { kinds: componentKinds, env: {} });
  assert.deepEqual(
    plain.bridgeConfigs.map((b) => [b.name, b.enabled]),
    [
      ['commands-from-postgres', false],
      ['commands-to-devices', false],
      ['telemetry-history', true],
      ['telemetry-to-kafka', false],
      ['telemetry-to-postgres', false],
    ],
  );
  // TypeScript bridges are listed, not loaded, by the synchronous loader (`ferry validate` checks them: test/e2e/handlers.test.ts).
  assert.deepEqual(
    plain.bridgeModules.map((path) => relative('bridges', path.slice(path.indexOf('bridges')))),
    ['alarm-alerts.ts', 'readings-to-postgres.ts', 'temperature-rollups.ts'],
  );
  assert.ok(plain.deviceProfiles.length >= 1);
  assert.equal(plain.mqtt.port, 1883);

  const withKafka = loadConfig('config/gateway.yaml', { kinds: componentKinds, env: { KAFKA_BROKERS: 'k1:9092, k2:9093' } });
  const kafka = withKafka.bridgeConfigs.find((b) => b.name === 'telemetry-to-kafka');
  assert.equal(kafka?.enabled, true);
  assert.deepEqual((kafka?.to as readonly { kafka: { brokers: string[] } }[])[0]?.kafka.brokers, ['k1:9092', 'k2:9093']);
  const withPostgres = loadConfig('config/gateway.yaml', { kinds: componentKinds, env: { POSTGRES_URL: 'postgres://ferry@db:5432/telemetry' } });
  const postgres = withPostgres.bridgeConfigs.find((b) => b.name === 'telemetry-to-postgres');
  assert.equal(postgres?.enabled, true);
  assert.equal((postgres?.to as readonly { postgres: { url: string } }[])[0]?.postgres.url, 'postgres://ferry@db:5432/telemetry');
  const outbox = withPostgres.bridgeConfigs.find((b) => b.name === 'commands-from-postgres');
  assert.equal(outbox?.enabled, true);
  assert.equal((outbox?.from as { postgres: { table: string } }).postgres.table, 'public.device_commands');
  const commands = withKafka.bridgeConfigs.find((b) => b.name === 'commands-to-devices');
  assert.equal(commands?.enabled, true);
  assert.deepEqual((commands?.from as { kafka: { topics: string[]; fromBeginning: boolean } }).kafka.topics, ['ferry.commands']);
  assert.deepEqual((commands?.to as readonly Record<string, unknown>[])[0], {
    devices: {
      topic: 'devices/${key}/commands',
      allowedTopics: ['devices/+/commands'],
      onUnsafeTopicValue: 'refuse',
      qos: 1,
      retain: false,
      expiryMs: 3_600_000,
      stopTimeoutMs: 2000,
    },
  });
});

test('three mistakes in two files are all reported with file, line, column and path', () => {
  const root = tree({
    'config/gateway.yaml': 'mqtt:\n  port: 70000\nbridges: [../bridges]\ndevices: []\n',
    'bridges/telemetry.yaml':
      'name: telemetry\nfrom:\n  mqtt:\n    topics: [devices/+/telemetry/#]\nto:\n  - kafka:\n      brokers: localhost:9092\n      topic: iot.telemetry\n      lingr: 5\n  - history:\n      keep: 0\n',
  });
  assert.deepEqual(problems(root), [
    'config/gateway.yaml:2:9: mqtt.port: Too big: expected number to be <=65535',
    "bridges/telemetry.yaml:9:7: to[0].kafka.lingr: unknown key 'lingr'",
    'bridges/telemetry.yaml:11:13: to[1].history.keep: Too small: expected number to be >=1',
  ]);
});

test('unknown kinds, missing keys, bad filters, duplicate names and unset variables are explained', () => {
  const root = tree({
    'config/gateway.yaml': 'bridges: [../bridges]\ndevices: []\n',
    'bridges/a.yaml': history,
    'bridges/b.yaml': history,
    'bridges/c.yaml': 'name: c\nfrom:\n  mqtt:\n    topics: ["a/#/b"]\nto:\n  - histroy: {}\n',
    'bridges/d.yaml': 'name: d\nfrom: {mqtt: {topics: [x]}}\nto:\n  - kafka:\n      brokers: ${BROKERS}\n',
  });
  assert.deepEqual(problems(root), [
    "bridges/b.yaml:1:7: name: bridge name 'h' is already used in bridges/a.yaml",
    "bridges/c.yaml:4:14: from.mqtt.topics[0]: invalid topic filter 'a/#/b': '#' must be a whole level and the last one",
    "bridges/c.yaml:6:5: to[0]: unknown kind 'histroy' (expected exactly one of: history, kafka, mqttClient, devices, postgres)",
    'bridges/d.yaml:5:16: to[0].kafka.brokers: environment variable BROKERS is not set (give a default with ${BROKERS:-value})',
    'bridges/d.yaml:5:7: to[0].kafka.topic: missing required key (expected string, received undefined)',
  ]);
});

test('YAML syntax errors and missing files point at the place', () => {
  const root = tree({
    'config/gateway.yaml': 'bridges: [../bridges, ../nowhere]\ndevices: []\n',
    'bridges/bad.yaml': 'name: x\nfrom: [unclosed\n',
  });
  const found = problems(root);
  assert.equal(found.length, 2);
  assert.match(found[0] ?? '', /^config\/gateway\.yaml:1:23: bridges\[1\]: no such file or directory/);
  assert.match(found[1] ?? '', /^bridges\/bad\.yaml:\d+:\d+: YAML: /);
});

test('defaults fill what is left out; interpolated plain scalars are typed, quoted ones stay strings', () => {
  const root = tree({
    'config/gateway.yaml': 'gateway:\n  name: "${NAME}"\nmqtt:\n  port: ${PORT:-1884}\nbridges: [../bridges]\ndevices: []\n',
    'bridges/h.yaml': history,
  });
  const config = loadConfig(join(root, 'config/gateway.yaml'), { kinds: componentKinds, env: { NAME: '007' } });
  assert.equal(config.gateway.name, '007');
  assert.equal(config.mqtt.port, 1884);
  assert.equal(config.mqtt.host, '0.0.0.0');
  assert.equal(config.admin.port, 9180);
  assert.equal(config.dataDirPath, join(root, 'config', 'data'));
  assert.deepEqual(config.bridgeConfigs[0]?.to, [{ history: { keep: 100000, synchronous: 'full', batchSize: 1000, batchTimeMs: 2 } }]);
});

test('the JSON Schema carries descriptions and every component kind', () => {
  const gateway = JSON.stringify(z.toJSONSchema(gatewaySchema(), { io: 'input', unrepresentable: 'any' }));
  assert.match(gateway, /TCP port of the embedded MQTT broker/);
  const bridge = JSON.stringify(z.toJSONSchema(bridgeSchema(componentKinds), { io: 'input', unrepresentable: 'any' }));
  for (const kind of ['mqtt', 'history', 'kafka']) assert.match(bridge, new RegExp(`"${kind}"`));
  assert.match(bridge, /"additionalProperties":false/);
});

test("an mqttClient bridge's TLS files are read at load: missing or not PEM is reported at its line, relative to the bridge file", () => {
  const client = (tls: string) =>
    `name: plant\nfrom:\n  mqttClient:\n    url: mqtts://broker:8883\n    clientId: ferry-1\n    topics: [plant/#]\n    tls: ${tls}\nto:\n  - history: {}\n`;
  const root = tree({
    'config/gateway.yaml': 'bridges: [../bridges]\ndevices: []\n',
    'bridges/certs/ca.pem': '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n',
    'bridges/certs/notes.txt': 'not a certificate\n',
    'bridges/ok.yaml': client('{ca: certs/ca.pem}'),
    'bridges/bad.yaml': client('{ca: certs/missing.pem, cert: certs/notes.txt, key: certs/ca.pem}').replace('name: plant', 'name: plant-2'),
  });
  const found = problems(root);
  assert.deepEqual(
    found.map((p) => p.replace(root, '<root>')),
    [
      'bridges/bad.yaml:7:15: from.mqttClient.tls.ca: no such file: <root>/bridges/certs/missing.pem',
      'bridges/bad.yaml:7:40: from.mqttClient.tls.cert: not a PEM file: <root>/bridges/certs/notes.txt',
    ],
  );
});

test("an mqttClient source's filters (shared subscriptions without $share/<group>/) give its sinks' templates their ${1}", () => {
  const bridge = (topic: string) =>
    `name: plant\nfrom:\n  mqttClient:\n    url: mqtt://broker:1883\n    clientId: ferry-1\n    topics: ["$share/ferry/plant/+/telemetry/#", "lab/+/x"]\nto:\n  - kafka: {brokers: "k:9092", topic: "${topic}"}\n`;
  const ok = tree({ 'config/gateway.yaml': 'bridges: [../bridges]\ndevices: []\n', 'bridges/plant.yaml': bridge('plant.${1}.telemetry') });
  const loaded = loadConfig(join(ok, 'config/gateway.yaml'), { kinds: componentKinds, env: {}, cwd: ok });
  const source = componentKinds.sources.find((s) => s.kind === 'mqttClient');
  assert.deepEqual(source?.filters?.((loaded.bridgeConfigs[0]?.from as { mqttClient: never }).mqttClient), ['plant/+/telemetry/#', 'lab/+/x']);
  const bad = tree({ 'config/gateway.yaml': 'bridges: [../bridges]\ndevices: []\n', 'bridges/plant.yaml': bridge('plant.${2}.telemetry') });
  assert.match(problems(bad)[0] ?? '', /to\[0\]\.kafka\.topic: template 'plant\.\$\{2\}\.telemetry': \$\{2\} needs a 2nd '\+' wildcard/);
});

test('devices: is optional: without it, a missing default directory means no profiles; a listed one that is missing is still an error (issue 18)', () => {
  const root = tree({ 'config/gateway.yaml': 'bridges: [../bridges]\n', 'bridges/h.yaml': history });
  const config = loadConfig(join(root, 'config/gateway.yaml'), { kinds: componentKinds, env: {}, cwd: root });
  assert.deepEqual(config.deviceProfiles, []);
  const listed = tree({ 'config/gateway.yaml': 'bridges: [../bridges]\ndevices: [../devices]\n', 'bridges/h.yaml': history });
  assert.match(problems(listed)[0] ?? '', /devices\[0\]: no such file or directory/);
});

test("a PostgreSQL database's TLS files are read at load and reported at their line in gateway.yaml; a SQLite one needs none", () => {
  const root = tree({
    'config/gateway.yaml':
      'bridges: []\ndevices: []\ndatabases:\n  main:\n    postgres:\n      url: postgres://ferry@db/ferry\n      ssl: {mode: verify-full, ca: pg-ca.pem}\n  local:\n    sqlite: {file: app.db}\n',
  });
  assert.deepEqual(
    problems(root).map((p) => p.replace(root, '<root>')),
    ['config/gateway.yaml:7:36: databases.main.postgres.ssl.ca: no such file: <root>/config/pg-ca.pem'],
  );
});
