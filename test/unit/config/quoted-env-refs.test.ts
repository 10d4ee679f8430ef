// A `${VAR}` in a number or boolean setting, quoted or not: the loader reads its text as a
// number or boolean, refuses other text naming the variables (never their values), and agrees
// with the editor schema (`ferry config schema`) on which forms can be valid at all.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { parse } from 'yaml';
import { ConfigError, formatIssue } from '../../../src/config/issues.ts';
import { type GatewayConfig, loadConfig } from '../../../src/config/load.ts';
import { configJsonSchema } from '../../../src/config/json-schema.ts';
import { componentKinds } from '../../../src/runtime/registry.ts';

const roots: string[] = [];
after(() => roots.forEach((r) => rmSync(r, { recursive: true, force: true })));

/** A gateway file with `port` as written, and one bridge with `enabled` and `qos` as written. */
function files(values: { port?: string; enabled?: string; qos?: string }): { gateway: string; bridge: string } {
  return {
    gateway: `mqtt:\n  port: ${values.port ?? '1883'}\nbridges: [bridges]\ndevices: []\n`,
    bridge: `name: ext\nenabled: ${values.enabled ?? 'true'}\nfrom:\n  mqttClient:\n    url: mqtt://127.0.0.1:1883\n    clientId: c\n    topics: [a/#]\n    qos: ${values.qos ?? '1'}\nto:\n  - history: {}\n`,
  };
}

type Loaded = { config: GatewayConfig; problems?: undefined } | { config?: undefined; problems: string[] };

function load(values: { port?: string; enabled?: string; qos?: string }, env: Record<string, string>): Loaded {
  const root = mkdtempSync(join(tmpdir(), 'ferry-quoted-env-'));
  roots.push(root);
  mkdirSync(join(root, 'bridges'));
  const { gateway, bridge } = files(values);
  writeFileSync(join(root, 'gateway.yaml'), gateway);
  writeFileSync(join(root, 'bridges', 'ext.yaml'), bridge);
  try {
    return { config: loadConfig(join(root, 'gateway.yaml'), { kinds: componentKinds, env, cwd: root }) };
  } catch (error) {
    assert.ok(error instanceof ConfigError, String(error));
    return { problems: error.issues.map(formatIssue) };
  }
}

const qosOf = (config: GatewayConfig) => (config.bridgeConfigs[0]?.from as { mqttClient: { qos: number } }).mqttClient.qos;

test('a quoted ${VAR} in a union of numbers takes the number; other text is refused naming the variable, not its value', () => {
  const loaded = load({ qos: '"${QOS}"' }, { QOS: '0' });
  assert.equal(loaded.config && qosOf(loaded.config), 0);
  assert.equal(load({ qos: "'${QOS:-1}'" }, {}).config?.bridgeConfigs.length, 1);
  for (const secret of ['s3cr3t-value', '3']) {
    const refused = load({ qos: '"${QOS}"' }, { QOS: secret });
    assert.deepEqual(refused.problems, ['bridges/ext.yaml:8:10: from.mqttClient.qos: expected one of 0, 1, 2; ${QOS} gave text that is none of them']);
  }
});

test('mixed text in a number setting is refused naming each variable, at the value, quoted or not', () => {
  const env = { HOST: 'broker.internal', PORT: '1884' };
  for (const port of ['"${HOST}:${PORT}"', '${HOST}:${PORT}']) {
    assert.deepEqual(load({ port }, env).problems, ['gateway.yaml:2:9: mqtt.port: expected a number; ${HOST}, ${PORT} gave text that is not one'], port);
  }
  // The default of a set variable is not used, so its variable is not named.
  assert.deepEqual(load({ port: '"${PORT:-${DEFAULT_PORT}}"' }, { PORT: 'x', DEFAULT_PORT: '1' }).problems, [
    'gateway.yaml:2:9: mqtt.port: expected a number; ${PORT} gave text that is not one',
  ]);
  assert.equal(load({ port: '"${PORT:-${DEFAULT_PORT}}"' }, { DEFAULT_PORT: '1885' }).config?.mqtt.port, 1885);
});

test('an unquoted ${VAR} whose value YAML types wrongly for the setting is refused naming the variable', () => {
  assert.deepEqual(load({ enabled: '${ON}' }, { ON: '1' }).problems, ['bridges/ext.yaml:2:10: enabled: expected true or false; ${ON} gave text that is neither']);
  assert.deepEqual(load({ port: '${PORT}' }, { PORT: '' }).problems, ['gateway.yaml:2:9: mqtt.port: expected a number; ${PORT} gave text that is not one']);
});

test('the editor schema and the loader agree on which forms of a number or boolean setting can be valid', () => {
  const ajv = new Ajv2020({ strict: true, allErrors: true, validateFormats: false, logger: false });
  const gatewaySchema = ajv.compile(configJsonSchema('gateway', componentKinds));
  const bridgeSchema = ajv.compile(configJsonSchema('bridge', componentKinds));
  const editorTakes = (values: { port?: string; enabled?: string; qos?: string }) => {
    const { gateway, bridge } = files(values);
    return gatewaySchema(parse(gateway)) && bridgeSchema(parse(bridge));
  };
  // [the value as written, a variable value the loader takes it with (undefined: none can)]
  const cases: [{ port?: string; enabled?: string; qos?: string }, Record<string, string> | undefined][] = [
    [{ port: '"${PORT}"' }, { PORT: '1884' }],
    [{ port: '${PORT}' }, { PORT: '1884' }],
    [{ port: "'${PORT:-1883}'" }, {}],
    [{ port: '"${PORT:-${DEFAULT_PORT:-1883}}"' }, {}],
    [{ port: '"0x${HEX}"' }, { HEX: '75C' }],
    [{ port: '"${MAJOR}${MINOR}"' }, { MAJOR: '18', MINOR: '84' }],
    [{ enabled: '"${ON}"' }, { ON: 'false' }],
    [{ qos: '"${QOS}"' }, { QOS: '0' }],
    [{ port: '"1884"' }, undefined],
    [{ port: '"$${PORT}"' }, undefined],
    [{ port: '"${port}"' }, undefined],
    [{ port: '"${HOST}:${PORT}"' }, undefined],
    [{ port: '${HOST}:${PORT}' }, undefined],
    [{ port: '"tcp://${HOST}"' }, undefined],
    [{ enabled: '"true"' }, undefined],
    [{ qos: '"1"' }, undefined],
  ];
  for (const [values, env] of cases) {
    const label = JSON.stringify(values);
    assert.equal(editorTakes(values), env !== undefined, `editor: ${label}`);
    // A form that can be valid is taken with the right values; one that cannot is refused with any.
    const loaded = load(values, env ?? { PORT: '1884', HOST: '1', port: '1884' });
    assert.equal(loaded.problems === undefined, env !== undefined, `loader: ${label} ${JSON.stringify(loaded.problems)}`);
  }
});
