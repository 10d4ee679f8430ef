import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, test } from 'node:test';
import { TelemetryPayloads } from '../../../src/cli/simulate/payload.ts';
import { ConfigError, formatIssue } from '../../../src/config/issues.ts';
import { loadConfig } from '../../../src/config/load.ts';
import type { BridgeConfig } from '../../../src/config/schema.ts';
import { compileJsonSchema } from '../../../src/core/json-schema.ts';
import { componentKinds } from '../../../src/runtime/registry.ts';

const roots: string[] = [];
after(() => roots.forEach((r) => rmSync(r, { recursive: true, force: true })));

function tree(files: Record<string, string>): string {
  const root = mkdtempSync(join(tmpdir(), 'ferry-schemas-'));
  roots.push(root);
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  return root;
}

const load = (root: string) => loadConfig(join(root, 'config/gateway.yaml'), { kinds: componentKinds, env: {}, cwd: root });

function problems(root: string): string[] {
  try {
    load(root);
  } catch (error) {
    assert.ok(error instanceof ConfigError, String(error));
    return error.issues.map(formatIssue);
  }
  assert.fail('expected the config to be refused');
}

const gateway = 'bridges: [../bridges]\ndevices: [../devices]\n';
const bridge = (transform: string) => `name: b\nfrom: {mqtt: {topics: ["devices/#"]}}\nto: [{history: {}}]\ntransform:\n${transform}`;

test('validate steps get the JSON Schema of the profile they name, or of the file, read relative to their own file', () => {
  const root = tree({
    'config/gateway.yaml': gateway,
    'devices/sensor.yaml': 'name: sensor\npayloadSchema: schemas/sensor.json\n',
    'devices/schemas/sensor.json': '{"type":"object","required":["celsius"]}',
    'devices/inline.yaml': 'name: inline\npayloadSchema:\n  type: object\n  properties: {a: {type: string}}\n',
    'bridges/a.yaml': bridge('  - decode: json\n  - validate: {profile: sensor}\n  - validate: {schema: climate.json}\n  - keep: [celsius, meta.fw]\n'),
    'bridges/climate.json': '{"type":"object"}',
  });
  const config = load(root);
  const [b] = config.bridgeConfigs as BridgeConfig[];
  assert.deepEqual(b?.transform, [
    { decode: 'json' },
    { validate: { profile: 'sensor', resolved: { jsonSchema: { type: 'object', required: ['celsius'] }, label: 'schema of profile sensor' } } },
    { validate: { schema: 'climate.json', resolved: { jsonSchema: { type: 'object' }, label: 'schema climate.json' } } },
    { keep: ['celsius', 'meta.fw'] },
  ]);
  assert.deepEqual(config.deviceProfiles.find((p) => p.name === 'sensor')?.payloadSchema, { type: 'object', required: ['celsius'] });
});

test('ferry validate points at an unknown profile, a profile without payloadSchema, broken schemas and bad steps', () => {
  const root = tree({
    'config/gateway.yaml': gateway,
    'devices/plain.yaml': 'name: plain\n',
    'devices/broken.yaml': 'name: broken\npayloadSchema:\n  type: nubmer\n',
    'devices/missing.yaml': 'name: missing\npayloadSchema: nowhere.json\n',
    'bridges/a.yaml': bridge(
      '  - validate: {profile: nobody}\n  - validate: {profile: plain}\n  - validate: {profile: broken}\n  - validate: {schema: bad.json}\n  - validate: {}\n  - keep: []\n  - decode: xml\n  - rename: {a: b}\n',
    ),
    'bridges/bad.json': '{"type": "object",',
  });
  const got = problems(root);
  const expected = [
    /^bridges\/a\.yaml:9:15: transform\[4\]\.validate: give exactly one of `profile` \(a device profile name\) or `schema` \(a JSON Schema file\)$/,
    /^bridges\/a\.yaml:10:11: transform\[5\]\.keep: Too small/,
    /^bridges\/a\.yaml:11:13: transform\[6\]\.decode: the only payload format is `json`$/,
    /^bridges\/a\.yaml:12:5: transform\[7\]: unknown kind 'rename' \(expected exactly one of: decode, keep, drop, validate, lookup\)$/,
    /^devices\/missing\.yaml:2:16: payloadSchema: no such file: .*devices\/nowhere\.json$/,
  ];
  assert.equal(got.length, expected.length, got.join('\n'));
  expected.forEach((pattern, i) => assert.match(got[i] as string, pattern));

  // The schema-level problems are found once the steps themselves are well-formed.
  const fixed = tree({
    'config/gateway.yaml': gateway,
    'devices/plain.yaml': 'name: plain\n',
    'devices/broken.yaml': 'name: broken\npayloadSchema:\n  type: nubmer\n',
    'bridges/a.yaml': bridge('  - validate: {profile: nobody}\n  - validate: {profile: plain}\n  - validate: {profile: broken}\n  - validate: {schema: bad.json}\n'),
    'bridges/bad.json': '{"type": "object",',
  });
  const found = problems(fixed);
  assert.deepEqual(found.slice(0, 2), [
    "bridges/a.yaml:5:25: transform[0].validate.profile: no device profile named 'nobody' (profiles: broken, plain)",
    "bridges/a.yaml:6:25: transform[1].validate.profile: device profile 'plain' (devices/plain.yaml) has no payloadSchema to validate against: add one to it, or use `schema: FILE`",
  ]);
  assert.match(found[2] as string, /^devices\/broken\.yaml:3:3: payloadSchema: invalid JSON Schema: schema is invalid: data\/type must be/);
  assert.match(found[3] as string, /^bridges\/a\.yaml:8:24: transform\[3\]\.validate\.schema: .*bridges\/bad\.json is not JSON: /);
  assert.equal(found.length, 4, 'the bridge naming the broken profile is not reported again');

  // A profile's schema is compiled only when a bridge validates against it: ajv is not loaded otherwise.
  const unused = tree({ 'config/gateway.yaml': gateway, 'devices/broken.yaml': 'name: broken\npayloadSchema:\n  type: nubmer\n', 'bridges/a.yaml': bridge('  - decode: json\n') });
  assert.equal(load(unused).bridgeConfigs.length, 1);
});

test("the shipped temperature-sensor profile has a payloadSchema that ferry simulate's payloads match", () => {
  const config = loadConfig('config/gateway.yaml', { kinds: componentKinds, env: {} });
  const profile = config.deviceProfiles.find((p) => p.name === 'temperature-sensor');
  assert.ok(profile?.telemetry !== undefined && typeof profile.payloadSchema === 'object');
  const validate = compileJsonSchema(profile.payloadSchema);
  const payloads = new TelemetryPayloads(profile.telemetry, 3);
  for (let seq = 0; seq < 300; seq++) {
    const value = JSON.parse(payloads.next(seq % 3, seq).toString()) as unknown;
    assert.equal(validate(value), undefined, JSON.stringify(value));
  }
  assert.equal(validate({ celsius: 'warm', humidity: 50 }), '/celsius must be number');
});
