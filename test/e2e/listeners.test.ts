import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, test } from 'node:test';
import { type IClientOptions, type MqttClient, connectAsync } from 'mqtt';
import { type RunningFerry, ferry, startFerry } from '../harness/ferry-process.ts';
import { mosquittoPub } from '../harness/mosquitto.ts';
import { credential, writeGatewayTree } from '../harness/gateway-tree.ts';
import { tempDirs } from '../harness/temp.ts';
import { makeCertificates } from '../harness/certs.ts';
import { eventually } from '../harness/eventually.ts';

const tempDir = tempDirs('ferry-listeners-');
const PASSWORDS = { 'sensor-a': 'alpha-pass', 'sensor-b': 'bravo-pass', watcher: 'watch-pass' };
const clients: MqttClient[] = [];
let certs: string;
/** identityFromCert, client certificates optional; WebSocket with maxConnections 2. */
let open: RunningFerry & { root: string; dataDir: string; ports: Record<string, number> };
/** requireClientCert with maxConnections 1 on TLS. */
let strict: RunningFerry & { root: string; dataDir: string; ports: Record<string, number> };

async function startGateway(mqtt: string): Promise<RunningFerry & { root: string; dataDir: string; ports: Record<string, number> }> {
  const root = tempDir();
  const config = writeGatewayTree(root, mqtt, {
    'sensor.yaml': `name: sensor\nclientId: sensor-*\ncredentials:\n${await credential('sensor-a', PASSWORDS['sensor-a'])}${await credential('sensor-b', PASSWORDS['sensor-b'])}`,
    'staff.yaml': `name: staff\ncredentials:\n${await credential('watcher', PASSWORDS.watcher)}acl: {publish: [], subscribe: ["#"]}\n`,
  });
  const dataDir = join(root, 'data');
  const gw = await startFerry(['--config', config, '--data-dir', dataDir]);
  const status = (await (await fetch(`${gw.adminUrl}/api/status`)).json()) as { listeners: { protocol: string; port: number }[] };
  const ports = Object.fromEntries(status.listeners.map((l) => [l.protocol, l.port]));
  return Object.assign(gw, { root, dataDir, ports });
}

const tlsFiles = () => `cert: ${join(certs, 'server.crt')}, key: ${join(certs, 'server.key')}, ca: ${join(certs, 'ca.crt')}`;

before(async () => {
  certs = tempDir();
  makeCertificates(certs, ['sensor-a', 'sensor-z']);
  open = await startGateway(`{allowAnonymous: false, tls: {port: 0, ${tlsFiles()}, identityFromCert: true}, websocket: {port: 0, maxConnections: 2}}`);
  strict = await startGateway(`{allowAnonymous: false, tls: {port: 0, ${tlsFiles()}, requireClientCert: true, identityFromCert: true, maxConnections: 1}}`);
});

after(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true)));
  for (const gw of [open, strict]) {
    if (gw === undefined) continue;
    gw.child.kill('SIGTERM');
    assert.equal(await gw.exited, 0);
  }
});

async function connect(url: string, options: IClientOptions): Promise<MqttClient> {
  const client = await connectAsync(url, { reconnectPeriod: 0, connectTimeout: 5000, ...options });
  clients.push(client);
  return client;
}

const tlsClient = (name?: string): IClientOptions => ({
  ca: readFileSync(join(certs, 'ca.crt')),
  ...(name === undefined ? {} : { cert: readFileSync(join(certs, `${name}.crt`)), key: readFileSync(join(certs, `${name}.key`)) }),
});

async function refusal(url: string, options: IClientOptions): Promise<string> {
  try {
    const client = await connect(url, options);
    // A refused TLS 1.3 client certificate shows only after the handshake: wait for the close.
    await Promise.race([new Promise<void>((resolve) => client.once('close', () => resolve())), sleep(1000)]);
    if (client.connected) return 'connected';
    return 'closed';
  } catch (error) {
    return (error as Error).message || 'refused';
  }
}

async function counters(gw: RunningFerry): Promise<Record<string, number>> {
  return ((await (await fetch(`${gw.adminUrl}/api/status`)).json()) as { counters: Record<string, number> }).counters;
}

async function watch(gw: RunningFerry): Promise<{ seen: string[] }> {
  const client = await connect(gw.mqttUrl, { clientId: 'watcher', username: 'watcher', password: PASSWORDS.watcher });
  const seen: string[] = [];
  client.on('message', (topic, payload) => seen.push(`${topic} ${payload.toString()}`));
  await client.subscribeAsync('#', { qos: 1 });
  return { seen };
}

/** Waits for the sockets of earlier tests on that listener to be closed on the gateway's side too. */
async function idle(gw: RunningFerry, protocol: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const status = (await (await fetch(`${gw.adminUrl}/api/status`)).json()) as { listeners: { protocol: string; clients: number }[] };
    if (status.listeners.find((l) => l.protocol === protocol)?.clients === 0) return;
    await sleep(50);
  }
  assert.fail(`${protocol} sockets still open`);
}

async function until(check: () => boolean): Promise<void> {
  await eventually(() => assert.ok(check(), 'waiting for: check()'), { timeoutMs: 5000 });
}

test('status lists every listener with the port it is bound to', async () => {
  const status = (await (await fetch(`${open.adminUrl}/api/status`)).json()) as { listeners: { protocol: string; port: number }[] };
  assert.deepEqual(
    status.listeners.map((l) => l.protocol),
    ['mqtt', 'mqtts', 'ws', 'http'],
  );
  for (const l of status.listeners) assert.ok(l.port > 0, `${l.protocol} port ${l.port}`);
  assert.ok(open.logs.some((l) => l['msg'] === `mqtts listener on 0.0.0.0:${open.ports['mqtts']}`));
});

test('mosquitto_pub over TLS with a password: acknowledged, delivered, kept in history', async () => {
  const seen = await watch(open);
  const pub = await mosquittoPub(`mqtts://sensor-a:${PASSWORDS['sensor-a']}@127.0.0.1:${open.ports['mqtts']}`, 'devices/sensor-a/telemetry/t', 'over-tls', {
    clientId: 'sensor-a',
    qos: 1,
    cafile: join(certs, 'ca.crt'),
  });
  assert.equal(pub.code, 0, pub.stderr);
  await until(() => seen.seen.includes('devices/sensor-a/telemetry/t over-tls'));
  assert.ok(seen.seen.includes('devices/sensor-a/telemetry/t over-tls'));
  const history = await ferry(['history', '--data-dir', open.dataDir, '--json']);
  assert.equal(history.code, 0, history.stderr);
  assert.ok(history.stdout.includes('"payload":"over-tls"'), history.stdout);
});

test('a client certificate is the login: sensor-a without a password, under its ACL', async () => {
  const seen = await watch(open);
  const url = `mqtts://127.0.0.1:${open.ports['mqtts']}`;
  const a = await connect(url, { clientId: 'sensor-a', ...tlsClient('sensor-a') });
  await a.publishAsync('devices/sensor-a/telemetry/t', 'by-cert', { qos: 1 });
  await until(() => seen.seen.includes('devices/sensor-a/telemetry/t by-cert'));
  assert.ok(seen.seen.includes('devices/sensor-a/telemetry/t by-cert'));

  const closed = new Promise<void>((resolve) => a.once('close', () => resolve()));
  a.publish('devices/sensor-b/telemetry/t', 'forbidden', { qos: 1 });
  await closed;
  await sleep(100);
  assert.deepEqual(
    seen.seen.filter((m) => m.includes('forbidden')),
    [],
  );

  // The certificate names sensor-a: another client id, another username or an unknown CN is refused.
  assert.match(await refusal(url, { clientId: 'sensor-b', ...tlsClient('sensor-a') }), /Identifier rejected/);
  assert.match(await refusal(url, { clientId: 'sensor-a', username: 'sensor-b', password: PASSWORDS['sensor-b'], ...tlsClient('sensor-a') }), /Bad username or password/);
  assert.match(await refusal(url, { clientId: 'sensor-z', ...tlsClient('sensor-z') }), /Not authorized/);
  // Without a certificate and without a password there is no login.
  assert.match(await refusal(url, { clientId: 'sensor-a', ...tlsClient() }), /Not authorized/);
  const counted = await counters(open);
  assert.equal(counted['mqtt.publish.refused{reason=acl}'], 1);
  assert.equal(counted['mqtt.connections.refused{reason=invalid_client_id}'], 1);
  assert.equal(counted['mqtt.connections.refused{reason=unknown_certificate}'], 1);
});

test('requireClientCert refuses a client without a certificate at the handshake', async () => {
  const url = `mqtts://127.0.0.1:${strict.ports['mqtts']}`;
  assert.notEqual(await refusal(url, { clientId: 'sensor-a', username: 'sensor-a', password: PASSWORDS['sensor-a'], ...tlsClient() }), 'connected');
  const a = await connect(url, { clientId: 'sensor-a', ...tlsClient('sensor-a') });
  await a.publishAsync('devices/sensor-a/telemetry/t', 'strict', { qos: 1 });
  await a.endAsync();
});

test('MQTT over WebSocket: publish and subscribe on /mqtt', async () => {
  const url = `ws://127.0.0.1:${open.ports['ws']}/mqtt`;
  await idle(open, 'ws');
  const watcher = await connect(url, { clientId: 'watcher', username: 'watcher', password: PASSWORDS.watcher });
  const seen: string[] = [];
  watcher.on('message', (topic, payload) => seen.push(`${topic} ${payload.toString()}`));
  await watcher.subscribeAsync('devices/#', { qos: 1 });
  const b = await connect(url, { clientId: 'sensor-b', username: 'sensor-b', password: PASSWORDS['sensor-b'] });
  await b.publishAsync('devices/sensor-b/telemetry/t', 'over-ws', { qos: 1 });
  await until(() => seen.includes('devices/sensor-b/telemetry/t over-ws'));
  assert.deepEqual(seen, ['devices/sensor-b/telemetry/t over-ws']);

  // Two sockets are open on the WebSocket port, its maxConnections: a third is refused and counted.
  assert.notEqual(await refusal(url, { clientId: 'sensor-a', username: 'sensor-a', password: PASSWORDS['sensor-a'] }), 'connected');
  assert.equal((await counters(open))['mqtt.connections.refused{reason=listener_full}'], 1);
  await Promise.all([watcher.endAsync(), b.endAsync()]);
});

test('maxConnections on the TLS port refuses the extra connection and counts it', async () => {
  const url = `mqtts://127.0.0.1:${strict.ports['mqtts']}`;
  await idle(strict, 'mqtts');
  const a = await connect(url, { clientId: 'sensor-a', ...tlsClient('sensor-a') });
  assert.notEqual(await refusal(url, { clientId: 'sensor-a', ...tlsClient('sensor-a') }), 'connected');
  assert.equal((await counters(strict))['mqtt.connections.refused{reason=listener_full}'], 1);
  assert.ok(a.connected);
  await a.endAsync();
});

test('a taken TLS port is refused with a message naming mqtt.tls.port; a missing cert file is a positioned config error', async () => {
  const blocker = createServer();
  blocker.listen(0, '127.0.0.1');
  await once(blocker, 'listening');
  const port = (blocker.address() as { port: number }).port;
  const root = tempDir();
  try {
    writeFileSync(join(root, 'gateway.yaml'), `mqtt:\n  host: 127.0.0.1\n  tls: {port: ${port}, ${tlsFiles()}}\nbridges: []\ndevices: []\n`);
    const result = await ferry(['run', '--config', join(root, 'gateway.yaml'), '--data-dir', join(root, 'data'), '--mqtt-port', '0', '--admin-port', '0']);
    assert.equal(result.code, 1);
    assert.match(result.stderr, new RegExp(`MQTT TLS port ${port} .* already in use.*mqtt\\.tls\\.port`));
  } finally {
    blocker.close();
  }
  writeFileSync(join(root, 'gateway.yaml'), 'mqtt:\n  tls:\n    cert: nope.crt\n    key: nope.key\n    requireClientCert: true\nbridges: []\ndevices: []\n');
  const invalid = await ferry(['validate', '--config', join(root, 'gateway.yaml')]);
  assert.equal(invalid.code, 1);
  assert.match(invalid.stderr, /gateway\.yaml:3:11: mqtt\.tls\.cert: no such file: .*nope\.crt/);
  assert.match(invalid.stderr, /gateway\.yaml:4:10: mqtt\.tls\.key: no such file/);
  assert.match(invalid.stderr, /mqtt\.tls\.ca: requireClientCert and identityFromCert need `ca`/);
});

test("behind a trusted proxy the per-address limit counts the X-Forwarded-For client; other peers' header is ignored", async () => {
  const proxied = await startGateway('{allowAnonymous: false, maxConnectionsPerAddress: 3, websocket: {port: 0, trustedProxies: ["127.0.0.1"]}}');
  const plain = await startGateway('{allowAnonymous: false, maxConnectionsPerAddress: 3, websocket: {port: 0}}');
  try {
    const login = { clientId: 'watcher', username: 'watcher', password: PASSWORDS.watcher };
    // The proxy appends the peer it saw to what the client sent (198.51.100.9, spoofable).
    const via = (gw: typeof proxied, forwardedFor: string) => ({
      wsOptions: { headers: { 'x-forwarded-for': `198.51.100.9, ${forwardedFor}` } },
      url: `ws://127.0.0.1:${gw.ports['ws']}/mqtt`,
    });
    // The login's client-id rule is %u, so every connection uses the client id 'watcher' and
    // replaces the previous one: what is counted is each address's connection attempts.
    for (const gw of [proxied, plain]) {
      for (let i = 0; i < 3; i++) {
        const { url, wsOptions } = via(gw, '203.0.113.7');
        const c = await connect(url, { ...login, wsOptions });
        await c.endAsync();
      }
    }
    // The fourth attempt of 203.0.113.7 is refused; 203.0.113.8 behind the same proxy is a client of its own.
    const seven = via(proxied, '203.0.113.7');
    assert.notEqual(await refusal(seven.url, { ...login, wsOptions: seven.wsOptions }), 'connected');
    const eight = via(proxied, '203.0.113.8');
    const c8 = await connect(eight.url, { ...login, wsOptions: eight.wsOptions });
    await c8.endAsync();
    assert.equal((await counters(proxied))['mqtt.connections.refused{reason=too_many_connections}'], 1);
    // Without trustedProxies the header is the client's word: every attempt is 127.0.0.1's, the fourth is refused.
    const spoofed = via(plain, '203.0.113.8');
    assert.notEqual(await refusal(spoofed.url, { ...login, wsOptions: spoofed.wsOptions }), 'connected');
    assert.equal((await counters(plain))['mqtt.connections.refused{reason=too_many_connections}'], 1);
    assert.ok(
      proxied.logs.some((l) => l['address'] === '203.0.113.7' && l['reason'] === 'too_many_connections'),
      'the refusal is logged with the forwarded address',
    );
  } finally {
    for (const gw of [proxied, plain]) {
      gw.child.kill('SIGTERM');
      await gw.exited;
    }
  }
});
