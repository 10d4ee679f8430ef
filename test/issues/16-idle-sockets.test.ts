// Issue 16, item 5: idle sockets exhausted the gateway's file descriptors before any login.
// 20,000 idle TLS sockets from four addresses filled the process's file limit; a TLS socket
// without a ClientHello was held 120 s, a WebSocket upgrade with slow headers 72 s; nothing
// was logged or counted. Each test runs the attack, scaled down by low limits in gateway.yaml,
// against `ferry run`.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { type Socket, createConnection } from 'node:net';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { after, before, test } from 'node:test';
import { connectAsync } from 'mqtt';
import WebSocket from 'ws';
import { openFileLimit } from '../../src/config/file-limit.ts';
import { defaultMaxConnections } from '../../src/runtime/broker-options.ts';
import { makeCertificates } from '../harness/certs.ts';
import { eventually } from '../harness/eventually.ts';
import { type RunningFerry, startFerry } from '../harness/ferry-process.ts';
import { credential, writeGatewayTree } from '../harness/gateway-tree.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-issue16-sockets-');
const CONNECT_TIMEOUT_MS = 1000;
const PER_ADDRESS = 5;
let gw: RunningFerry;
let ports: Record<string, number>;
let certs: string;
const sockets: { destroy(): void }[] = [];

before(async () => {
  const root = tempDir();
  certs = tempDir();
  makeCertificates(certs, []);
  const tls = `tls: {port: 0, cert: ${join(certs, 'server.crt')}, key: ${join(certs, 'server.key')}}`;
  const config = writeGatewayTree(
    root,
    `{allowAnonymous: false, connectTimeoutMs: ${CONNECT_TIMEOUT_MS}, maxSocketsPerAddress: ${PER_ADDRESS}, refusals: {logIntervalMs: 1000}, ${tls}, websocket: {port: 0, maxConnections: 50}}`,
    { 'sensor.yaml': `name: sensor\nclientId: sensor-*\ncredentials:\n${await credential('sensor-1', 'pw-1')}` },
  );
  gw = await startFerry(['--config', config, '--data-dir', join(root, 'data')]);
  const status = (await (await fetch(`${gw.adminUrl}/api/status`)).json()) as { listeners: { protocol: string; port: number }[] };
  ports = Object.fromEntries(status.listeners.map((l) => [l.protocol, l.port]));
});

after(async () => {
  for (const s of sockets) s.destroy();
  gw.child.kill('SIGTERM');
  assert.equal(await gw.exited, 0);
});

async function counters(): Promise<Record<string, number>> {
  return ((await (await fetch(`${gw.adminUrl}/api/status`)).json()) as { counters: Record<string, number> }).counters;
}

/** An idle TCP socket to `port` from `localAddress`, and a promise of its close. */
function idle(port: number, localAddress: string): { socket: Socket; closed: Promise<void> } {
  const socket = createConnection({ host: '127.0.0.1', port, localAddress });
  socket.on('error', () => {});
  sockets.push(socket);
  return { socket, closed: new Promise((resolve) => socket.once('close', () => resolve())) };
}

const refusalLines = (address: string, reason: string) => gw.logs.filter((l) => l['address'] === address && l['reason'] === reason);

test('every listener gets a maxConnections derived from the open-file limit unless the config sets one', () => {
  const limit = openFileLimit(`/proc/${gw.child.pid}/limits`);
  assert.ok(limit !== undefined, 'the gateway has an open-file limit');
  const listening = Object.fromEntries(gw.logs.filter((l) => typeof l['protocol'] === 'string' && l['port'] !== undefined).map((l) => [l['protocol'], l['maxConnections']]));
  const derived = defaultMaxConnections(limit, 3);
  assert.ok(derived !== undefined && derived < limit);
  assert.deepEqual(listening, { mqtt: derived, mqtts: derived, ws: 50 });
});

test('sockets over mqtt.maxSocketsPerAddress are closed as they are accepted, on all listeners together, counted, and logged once', { timeout: 20_000 }, async () => {
  const from = '127.0.0.2';
  // Idle sockets that never send a byte, spread over the plain, TLS and WebSocket ports.
  const attack = Array.from({ length: 20 }, (_, i) => idle([ports['mqtt'], ports['mqtts'], ports['ws']][i % 3] as number, from));
  await eventually(async () => assert.equal((await counters())['mqtt.connections.refused{reason=too_many_sockets}'], 20 - PER_ADDRESS), { timeoutMs: 5000 });
  // Another address is not affected: a device logs in meanwhile.
  const device = await connectAsync(gw.mqttUrl, { clientId: 'sensor-1', username: 'sensor-1', password: 'pw-1', reconnectPeriod: 0 });
  await device.endAsync();
  // One line for the address, then one summary with the count of the others.
  await eventually(() => assert.ok(refusalLines(from, 'too_many_sockets').some((l) => l['suppressed'] === 20 - PER_ADDRESS - 1)), { timeoutMs: 5000 });
  const lines = refusalLines(from, 'too_many_sockets');
  assert.equal(lines.filter((l) => l['suppressed'] === undefined).length, 1, JSON.stringify(lines));
  // The held ones run into the connect deadline; then the address may connect again.
  await Promise.all(attack.map((a) => a.closed));
  const again = await connectAsync(gw.mqttUrl, { clientId: 'sensor-1', username: 'sensor-1', password: 'pw-1', reconnectPeriod: 0 });
  await again.endAsync();
});

test('no CONNECT within mqtt.connectTimeoutMs of the accept closes the socket, whatever it is doing: TLS handshake, WebSocket upgrade, or idle after them', {
  timeout: 20_000,
}, async () => {
  const from = '127.0.0.3';
  const before = (await counters())['mqtt.connections.refused{reason=connect_timeout}'] ?? 0;
  const closes: Promise<void>[] = [];
  // Plain TCP, nothing sent.
  closes.push(idle(ports['mqtt'] as number, from).closed);
  // TLS port, no ClientHello.
  closes.push(idle(ports['mqtts'] as number, from).closed);
  // TLS handshake done, no CONNECT.
  const tcp = createConnection({ host: '127.0.0.1', port: ports['mqtts'] as number, localAddress: from });
  const tls = tlsConnect({ socket: tcp, ca: readFileSync(join(certs, 'ca.crt')), servername: 'localhost' });
  tls.on('error', () => {});
  sockets.push(tls);
  closes.push(new Promise((resolve) => tls.once('close', () => resolve())));
  // WebSocket port, HTTP upgrade headers never finished.
  const slow = idle(ports['ws'] as number, from);
  slow.socket.write('GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n');
  closes.push(slow.closed);
  // WebSocket upgraded, no CONNECT.
  const ws = new WebSocket(`ws://127.0.0.1:${ports['ws']}/mqtt`, 'mqtt', { localAddress: from });
  ws.on('error', () => {});
  sockets.push({ destroy: () => ws.terminate() });
  closes.push(new Promise((resolve) => ws.once('close', () => resolve())));
  // On the code before the fix the TLS socket without ClientHello stayed 120 s and the slow upgrade 60 s.
  await Promise.all(closes);
  await eventually(async () => assert.equal((await counters())['mqtt.connections.refused{reason=connect_timeout}'], before + 5), { timeoutMs: 5000 });
  await eventually(() => assert.ok(refusalLines(from, 'connect_timeout').some((l) => l['suppressed'] === 4)), { timeoutMs: 5000 });
  assert.equal(refusalLines(from, 'connect_timeout').filter((l) => l['suppressed'] === undefined).length, 1);
});

test('a device that sends its CONNECT in time is not cut off by the deadline, on any listener', { timeout: 30_000 }, async () => {
  const login = { clientId: 'sensor-1', username: 'sensor-1', password: 'pw-1', reconnectPeriod: 0, keepalive: 60 };
  const ca = readFileSync(join(certs, 'ca.crt'));
  // One after the other: the login's only client id is sensor-1.
  for (const url of [gw.mqttUrl, `mqtts://127.0.0.1:${ports['mqtts']}`, `ws://127.0.0.1:${ports['ws']}/mqtt`]) {
    const device = await connectAsync(url, { ...login, ca });
    const closed = new Promise<string>((resolve) => device.once('close', () => resolve('closed')));
    const marker = new Promise<string>((resolve) => setTimeout(() => resolve('still connected'), CONNECT_TIMEOUT_MS * 2));
    assert.equal(await Promise.race([closed, marker]), 'still connected', url);
    await device.endAsync();
  }
});
