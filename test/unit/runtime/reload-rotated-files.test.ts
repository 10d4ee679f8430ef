// A file the config names by path (a password file, a TLS certificate or key) replaced in place,
// path unchanged, as a rotated secret is: a reload counts it as a change of what reads it. Bridges
// and databases apply it (they read their files when they start), the MQTT TLS listener takes its
// renewed certificate in place (tls-reload.ts), the admin server its rotated token.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { type GatewayConfig, loadConfig, loadGatewayConfig } from '../../../src/config/load.ts';
import { componentKinds } from '../../../src/runtime/registry.ts';
import { adminTokenChange, applied, databasesChanged, planBridges, reloadChanges, reloadedConfig, restartNeeded, tlsRenewed } from '../../../src/runtime/reload-plan.ts';
import { makeCertificates } from '../../harness/certs.ts';

const roots: string[] = [];
after(() => roots.forEach((r) => rmSync(r, { recursive: true, force: true })));

function newRoot(): string {
  const root = mkdtempSync(join(tmpdir(), 'ferry-rotated-'));
  roots.push(root);
  return root;
}

function write(root: string, files: Record<string, string>): void {
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), text);
  }
}

const load = (root: string): GatewayConfig => loadConfig(join(root, 'gateway.yaml'), { kinds: componentKinds, env: {}, cwd: root });

const PG = 'postgres://ferry@127.0.0.1:5432/telemetry';

const BRIDGES = {
  'gateway.yaml': 'bridges: [bridges]\ndevices: []\n',
  'secrets/pg-password': 'first\n',
  'bridges/pg.yaml': `name: pg\nfrom: {mqtt: {topics: ["pg/#"]}}\nto:\n  - postgres:\n      url: ${PG}\n      password: {file: ../secrets/pg-password}\n      table: public.readings\n      columns: {id: "\${id}"}\n`,
  'bridges/outbox.yaml': `name: outbox\nfrom:\n  postgres:\n    url: ${PG}\n    password: {file: ../secrets/outbox-password}\n    table: public.commands\n    keyColumn: device\n    payloadColumn: command\nto: [{devices: {topic: "d/\${key}/c", allowedTopics: [d/+/c]}}]\n`,
  'secrets/outbox-password': 'outbox\n',
  'bridges/ext.yaml':
    'name: ext\nfrom: {mqtt: {topics: ["ext/#"]}}\nto:\n  - mqttClient:\n      url: mqtts://broker:8883\n      clientId: gw\n      tls: {ca: ../certs/ca.crt, cert: ../certs/gw.crt, key: ../certs/gw.key}\n',
  'bridges/plain.yaml': 'name: plain\nfrom: {mqtt: {topics: ["plain/#"]}}\nto: [{history: {}}]\n',
};

test('a bridge whose password or TLS file was replaced in place is changed; a file rewritten with the same content is no change', () => {
  const root = newRoot();
  mkdirSync(join(root, 'certs'));
  makeCertificates(join(root, 'certs'), ['gw']);
  write(root, BRIDGES);
  const running = load(root);

  // Written again, same bytes: nothing to restart.
  write(root, { 'secrets/pg-password': 'first\n', 'secrets/outbox-password': 'outbox\n' });
  const same = load(root);
  assert.deepEqual(planBridges(running.bridgeConfigs, same.bridgeConfigs), { added: [], removed: [], changed: [], unchanged: ['ext', 'outbox', 'pg', 'plain'] });

  write(root, { 'secrets/pg-password': 'second\n' });
  const rotated = load(root);
  assert.deepEqual(
    planBridges(running.bridgeConfigs, rotated.bridgeConfigs).changed.map((b) => b.name),
    ['pg'],
  );

  // New certificates for the external broker's client, under the same names; the outbox's password too.
  makeCertificates(join(root, 'certs'), ['gw']);
  write(root, { 'secrets/outbox-password': 'rotated\n' });
  const plan = planBridges(rotated.bridgeConfigs, load(root).bridgeConfigs);
  assert.deepEqual(
    plan.changed.map((b) => b.name),
    ['ext', 'outbox'],
  );
  assert.deepEqual(plan.unchanged, ['pg', 'plain']);
  assert.deepEqual(restartNeeded(running, load(root)), [], 'bridges apply their files: no restart');
  // The config holds keyed hashes of the files, never their contents.
  assert.doesNotMatch(JSON.stringify(load(root).bridgeConfigs), /rotated|second|BEGIN/);
});

test('a database whose password file was replaced is changed (it opens anew), with no restart', () => {
  const root = newRoot();
  const gateway = `bridges: []\ndevices: []\ndatabases:\n  main:\n    postgres: {url: '${PG}', password: {file: main-password}}\n  other:\n    postgres: {url: '${PG}'}\n  local:\n    sqlite: {file: app.db}\n`;
  write(root, { 'gateway.yaml': gateway, 'main-password': 'first\n' });
  const running = load(root);
  write(root, { 'main-password': 'first\n' });
  assert.deepEqual(databasesChanged(running, load(root)), []);
  write(root, { 'main-password': 'second\n' });
  const next = load(root);
  assert.deepEqual(databasesChanged(running, next), ['main']);
  assert.deepEqual(restartNeeded(running, next), []);
  assert.doesNotMatch(JSON.stringify(next.databaseFiles), /second/);
});

test('a renewed MQTT listener certificate and a rotated admin token file are applied in place', () => {
  const root = newRoot();
  mkdirSync(join(root, 'certs'));
  makeCertificates(join(root, 'certs'), []);
  write(root, {
    'gateway.yaml': 'bridges: []\ndevices: []\nmqtt:\n  tls: {cert: certs/server.crt, key: certs/server.key}\nadmin: {tokenFile: admin-token}\n',
    'admin-token': 'a-token-of-sixteen-characters\n',
  });
  const running = load(root);
  makeCertificates(join(root, 'certs'), []);
  write(root, { 'admin-token': 'another-token-of-sixteen\n' });
  const next = load(root);
  assert.equal(tlsRenewed(running, next), true);
  assert.equal(adminTokenChange(running, next), 'replaced');
  assert.deepEqual(restartNeeded(running, next), []);
  assert.equal(reloadedConfig(running, next).adminToken, 'another-token-of-sixteen');

  // Other files (a renewal written to a new directory) are applied too; the port needs a restart.
  mkdirSync(join(root, 'renewed'));
  makeCertificates(join(root, 'renewed'), []);
  write(root, { 'gateway.yaml': 'bridges: []\ndevices: []\nmqtt:\n  tls: {port: 8884, cert: renewed/server.crt, key: renewed/server.key}\nadmin: {tokenFile: admin-token}\n' });
  const moved = load(root);
  assert.equal(tlsRenewed(next, moved), true);
  assert.deepEqual(restartNeeded(next, moved), ['mqtt.tls.port changed (8883 → 8884): not applied; restart needed']);
  // Turning TLS off is named once, by its setting.
  write(root, { 'gateway.yaml': 'bridges: []\ndevices: []\nadmin: {tokenFile: admin-token}\n' });
  const off = load(root);
  assert.equal(tlsRenewed(moved, off), false);
  assert.equal(restartNeeded(moved, off).length, 1);
  assert.match(restartNeeded(moved, off)[0] ?? '', /^mqtt\.tls changed \(.* → unset\): not applied; restart needed$/);

  // A token written in gateway.yaml is applied as well.
  const inline = (token: string) => {
    write(root, { 'gateway.yaml': `bridges: []\ndevices: []\nadmin: {token: ${token}}\n` });
    return load(root);
  };
  const [first, second] = [inline('a-token-of-sixteen-characters'), inline('another-token-of-sixteen')];
  assert.equal(adminTokenChange(first, second), 'replaced');
  assert.deepEqual(restartNeeded(first, second), []);
  assert.deepEqual(reloadedConfig(first, second).admin, second.admin);
});

test('removing the admin token is applied on loopback; off loopback it needs a restart, and the token stays', () => {
  const root = newRoot();
  const config = (admin: string) => {
    write(root, { 'gateway.yaml': `bridges: []\ndevices: []\nadmin: ${admin}\n`, 'admin-token': 'a-token-of-sixteen-characters\n' });
    return load(root);
  };
  const loopback = config('{tokenFile: admin-token}');
  const open = config('{}');
  assert.equal(adminTokenChange(loopback, open), 'removed');
  assert.deepEqual(restartNeeded(loopback, open), []);
  assert.equal(reloadedConfig(loopback, open).adminToken, undefined);
  assert.equal(adminTokenChange(open, loopback), 'added', 'adding a token is applied');
  assert.equal(adminTokenChange(loopback, loopback), undefined);
  // Without an admin server running, no token change is announced (no request needs one).
  const off = (token: string) => config(`{enabled: false, token: ${token}}`);
  assert.equal(adminTokenChange(off('a-token-of-sixteen-characters'), off('another-token-of-sixteen')), undefined);

  // Bound to all interfaces with a token; the new config moves the server to loopback, which only a restart does.
  const exposed = config('{host: 0.0.0.0, tokenFile: admin-token}');
  assert.equal(adminTokenChange(exposed, open), undefined);
  assert.deepEqual(restartNeeded(exposed, open), [
    'admin.host changed ("0.0.0.0" → "127.0.0.1"): not applied; restart needed',
    'the admin token was removed: not applied while the admin server listens on 0.0.0.0, reachable from other machines; restart needed',
  ]);
  const kept = reloadedConfig(exposed, open);
  assert.equal(kept.adminToken, 'a-token-of-sixteen-characters');
  assert.deepEqual(kept.admin, exposed.admin);
});

test('a TypeScript bridge whose sink reads a password file is changed when the file is replaced', async () => {
  const root = newRoot();
  const api = pathToFileURL(join(process.cwd(), 'src/index.ts')).href;
  write(root, {
    'gateway.yaml': 'bridges: [bridges]\ndevices: []\n',
    'pg-password': 'first\n',
    'bridges/ts.ts': `import { defineBridge } from '${api}';\nexport default defineBridge({ name: 'ts', from: { mqtt: { topics: ['a/#'] } }, to: { out: { postgres: { url: '${PG}', password: { file: '../pg-password' }, table: 'public.t', columns: { id: '\${id}' } } } }, handle: (m) => m.pipe() });\n`,
  });
  const loadTs = () => loadGatewayConfig(join(root, 'gateway.yaml'), { kinds: componentKinds, env: {}, cwd: root });
  const running = await loadTs();
  assert.deepEqual(planBridges(running.bridgeConfigs, (await loadTs()).bridgeConfigs).unchanged, ['ts']);
  write(root, { 'pg-password': 'second\n' });
  assert.deepEqual(
    planBridges(running.bridgeConfigs, (await loadTs()).bridgeConfigs).changed.map((b) => b.name),
    ['ts'],
  );
});

test("a reload's answer and log line name how the admin token changed, never the token", () => {
  const root = newRoot();
  const config = (admin: string, token = 'a-token-of-sixteen-characters') => {
    write(root, { 'gateway.yaml': `bridges: []\ndevices: []\nadmin: ${admin}\n`, 'admin-token': `${token}\n` });
    return load(root);
  };
  const answer = (running: GatewayConfig, next: GatewayConfig) => applied(planBridges([], []), reloadChanges(running, next));
  const [open, first] = [config('{}'), config('{tokenFile: admin-token}')];
  const second = config('{tokenFile: admin-token}', 'another-token-of-sixteen');
  const cases = [
    [first, second, 'replaced', /; admin token replaced \(the previous one no longer works\)$/],
    [second, open, 'removed', /; admin token removed \(the admin server on loopback needs none now\)$/],
    [open, first, 'added', /; admin token added \(required from now on\)$/],
  ] as const;
  for (const [running, next, change, logged] of cases) {
    const { result, message } = answer(running, next);
    assert.equal(result.applied.adminToken, change);
    assert.match(message, logged);
    assert.doesNotMatch(JSON.stringify({ result, message }), /sixteen/, 'no part of a token');
  }
  const { result, message } = answer(second, second);
  assert.equal('adminToken' in result.applied, false, 'a token that stays is not named');
  assert.doesNotMatch(message, /admin token/);
});
