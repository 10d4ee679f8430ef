import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { type GatewayConfig, loadConfig, loadGatewayConfig } from '../../../src/config/load.ts';
import { hashPassword } from '../../../src/mqtt/password.ts';
import { componentKinds } from '../../../src/runtime/registry.ts';
import { devicesChanged, planBridges, restartNeeded } from '../../../src/runtime/reload-plan.ts';

const roots: string[] = [];
after(() => roots.forEach((r) => rmSync(r, { recursive: true, force: true })));

/** Writes a config tree (path → text), into `root` when given, and loads it the way the gateway does. */
function load(files: Record<string, string>, root = newRoot()): GatewayConfig {
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  return loadConfig(join(root, 'gateway.yaml'), { kinds: componentKinds, env: {}, cwd: root });
}

function newRoot(): string {
  const root = mkdtempSync(join(tmpdir(), 'ferry-reload-'));
  roots.push(root);
  mkdirSync(join(root, 'bridges'));
  mkdirSync(join(root, 'devices'));
  return root;
}

const GATEWAY = 'bridges: [bridges]\ndevices: [devices]\n';
const bridge = (name: string, topics = 'devices/#', to = '[{history: {}}]', extra = '') => `name: ${name}\nfrom: {mqtt: {topics: ["${topics}"]}}\nto: ${to}\n${extra}`;

test('bridges are compared by name and effective config: added, removed, changed, unchanged', () => {
  const before = load({
    'gateway.yaml': GATEWAY,
    'bridges/keep.yaml': bridge('keep'),
    'bridges/gone.yaml': bridge('gone'),
    'bridges/edit.yaml': bridge('edit'),
    'bridges/defaults.yaml': bridge('defaults'),
    'bridges/off.yaml': bridge('off'),
  });
  const after = load({
    'gateway.yaml': GATEWAY,
    // Moved to another file: the same bridge.
    'bridges/renamed.yaml': bridge('keep'),
    'bridges/edit.yaml': bridge('edit', 'devices/+/telemetry/#'),
    // Spelling out a default changes nothing.
    'bridges/defaults.yaml': bridge('defaults', 'devices/#', '[{history: {keep: 100000}}]'),
    'bridges/off.yaml': bridge('off', 'devices/#', '[{history: {}}]', 'enabled: false\n'),
    'bridges/new.yaml': bridge('new'),
  });
  const plan = planBridges(before.bridgeConfigs, after.bridgeConfigs);
  assert.deepEqual(
    plan.added.map((b) => b.name),
    ['new'],
  );
  assert.deepEqual([...plan.removed].sort(), ['gone', 'off']);
  assert.deepEqual(
    plan.changed.map((b) => b.name),
    ['edit'],
  );
  assert.deepEqual([...plan.unchanged].sort(), ['defaults', 'keep']);
});

test('a disabled bridge that is enabled again is added', () => {
  const before = load({ 'gateway.yaml': GATEWAY, 'bridges/b.yaml': bridge('b', 'devices/#', '[{history: {}}]', 'enabled: false\n') });
  const after = load({ 'gateway.yaml': GATEWAY, 'bridges/b.yaml': bridge('b') });
  assert.deepEqual(
    planBridges(before.bridgeConfigs, after.bridgeConfigs).added.map((b) => b.name),
    ['b'],
  );
});

test('gateway settings a reload cannot apply are named, with their old and new values', () => {
  const root = newRoot();
  const before = load({ 'gateway.yaml': `${GATEWAY}mqtt: {port: 1883, allowAnonymous: false}\nadmin: {port: 9180}\n` }, root);
  const after = load({ 'gateway.yaml': `${GATEWAY}mqtt: {port: 1884, allowAnonymous: true}\nadmin: {port: 9181}\nbuffer: {synchronous: normal}\n` }, root);
  assert.deepEqual(restartNeeded(before, after), [
    'mqtt.port changed (1883 → 1884): not applied; restart needed',
    'admin.port changed (9180 → 9181): not applied; restart needed',
    'buffer.synchronous changed ("full" → "normal"): not applied; restart needed',
  ]);
  // Anonymous access is applied (to new logins), so it is no warning but a device change.
  assert.equal(devicesChanged(before, after), true);
  assert.deepEqual(restartNeeded(before, before), []);
});

test('a changed device profile is a device change; the same profile in another file is not', async () => {
  const hash = await hashPassword('secret');
  const profile = (user: string) => `name: sensors\nclientId: "sensor-*"\ncredentials:\n  - {username: ${user}, passwordHash: "${hash}"}\n`;
  const before = load({ 'gateway.yaml': GATEWAY, 'devices/a.yaml': profile('sensor') });
  assert.equal(devicesChanged(before, load({ 'gateway.yaml': GATEWAY, 'devices/b.yaml': profile('sensor') })), false);
  assert.equal(devicesChanged(before, load({ 'gateway.yaml': GATEWAY, 'devices/a.yaml': profile('probe') })), true);
});

test('a TypeScript bridge is unchanged while its file is, and changed once the file is edited', async () => {
  const root = newRoot();
  const api = pathToFileURL(join(process.cwd(), 'src/index.ts')).href;
  const handler = (topic: string) =>
    `import { defineBridge } from '${api}';\nexport default defineBridge({ name: 'ts', from: { mqtt: { topics: ['${topic}'] } }, to: { out: { history: {} } }, handle: (m) => m.pipe() });\n`;
  const loadTs = (files: Record<string, string>) => {
    for (const [path, text] of Object.entries(files)) writeFileSync(join(root, path), text);
    return loadGatewayConfig(join(root, 'gateway.yaml'), { kinds: componentKinds, env: {}, cwd: root });
  };
  const first = await loadTs({ 'gateway.yaml': GATEWAY, 'bridges/ts.ts': handler('a/#') });
  const same = await loadTs({});
  assert.deepEqual(planBridges(first.bridgeConfigs, same.bridgeConfigs), { added: [], removed: [], changed: [], unchanged: ['ts'] });
  const edited = await loadTs({ 'bridges/ts.ts': handler('b/#') });
  const plan = planBridges(same.bridgeConfigs, edited.bridgeConfigs);
  assert.deepEqual(
    plan.changed.map((b) => [b.name, (b.from['mqtt'] as { topics: string[] }).topics]),
    [['ts', ['b/#']]],
  );
});

test('a changed telemetry.endpoint is named in the reload warning without its user, password or query values', () => {
  const root = newRoot();
  const withEndpoint = (endpoint: string) => load({ 'gateway.yaml': `telemetry:\n  endpoint: ${endpoint}\n${GATEWAY}` }, root);
  const warnings = restartNeeded(withEndpoint('http://alice:old-pass-123@o1:4318/?api_key=old-key-456'), withEndpoint('http://alice:new-pass-789@o1:4318/?api_key=new-key-000'));
  assert.equal(warnings.length, 1, warnings.join('\n'));
  assert.match(warnings[0] as string, /^telemetry\.endpoint changed/);
  assert.doesNotMatch(warnings.join('\n'), /pass-|key-/);
});
