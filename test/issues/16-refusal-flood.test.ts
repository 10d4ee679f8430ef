// Issue 16, item 7: refusals flooded the log. One client wrote 300,000 warning lines (373 MB)
// in 12 s by sending refused subscriptions. Each test runs the flood, scaled down by low
// limits in gateway.yaml, against `ferry run`.
import assert from 'node:assert/strict';
import { type Socket, createConnection } from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { type IClientOptions, type MqttClient, connectAsync } from 'mqtt';
import { eventually } from '../harness/eventually.ts';
import { type RunningFerry, startFerry } from '../harness/ferry-process.ts';
import { credential, writeGatewayTree } from '../harness/gateway-tree.ts';
import { connectPacket, packet } from '../harness/mqtt-wire.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-issue16-refusals-');
const DISCONNECT_AFTER = 20;
const SUBSCRIPTIONS_PER_CLIENT = 5;
let gw: RunningFerry;
const open: (MqttClient | Socket)[] = [];

before(async () => {
  const root = tempDir();
  const config = writeGatewayTree(
    root,
    `{allowAnonymous: false, refusals: {logIntervalMs: 1000, disconnectAfter: ${DISCONNECT_AFTER}, windowMs: 120000}, limits: {subscriptionsPerClient: ${SUBSCRIPTIONS_PER_CLIENT}}}`,
    {
      'sensor.yaml': `name: sensor\nclientId: sensor-*\ncredentials:\n${await credential('sensor-1', 'pw-1')}${await credential('sensor-2', 'pw-2')}${await credential('sensor-3', 'pw-3')}${await credential('sensor-4', 'pw-4')}`,
    },
  );
  gw = await startFerry(['--config', config, '--data-dir', join(root, 'data')]);
});

after(async () => {
  for (const c of open) 'destroy' in c ? c.destroy() : c.end(true);
  gw.child.kill('SIGTERM');
  assert.equal(await gw.exited, 0);
});

async function counters(): Promise<Record<string, number>> {
  return ((await (await fetch(`${gw.adminUrl}/api/status`)).json()) as { counters: Record<string, number> }).counters;
}

async function device(name: string, options: IClientOptions = {}): Promise<MqttClient> {
  const client = await connectAsync(gw.mqttUrl, { clientId: name, username: name, password: `pw-${name.slice(-1)}`, reconnectPeriod: 0, ...options });
  open.push(client);
  return client;
}

const lines = (clientId: string, reason: string) => gw.logs.filter((l) => l['clientId'] === clientId && l['reason'] === reason);

test('refused subscriptions: the first is logged, the rest summed up per interval; the client is disconnected after disconnectAfter of them, once', {
  timeout: 30_000,
}, async () => {
  const client = await device('sensor-1');
  const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
  // One short of the limit: each is answered with 0x80 and the client stays.
  for (let i = 0; i < DISCONNECT_AFTER - 1; i++) {
    const code = await new Promise<number | undefined>((resolve) =>
      client.subscribe(`devices/sensor-2/commands/${i}`, { qos: 1 }, (error, granted) =>
        resolve(error === null || error === undefined ? granted?.[0]?.qos : (error as unknown as { packet: { granted: number[] } }).packet.granted[0]),
      ),
    );
    assert.equal(code, 128);
  }
  assert.ok(client.connected);
  await eventually(() => assert.ok(lines('sensor-1', 'acl').some((l) => l['suppressed'] === DISCONNECT_AFTER - 2)), { timeoutMs: 5000 });
  assert.equal(lines('sensor-1', 'acl').filter((l) => l['suppressed'] === undefined).length, 1, 'one full line for the client');
  // The next refusal disconnects it.
  client.subscribe('devices/sensor-2/commands/last', { qos: 1 });
  await closed;
  const c = await counters();
  assert.equal(c['mqtt.subscribe.refused{reason=acl}'], DISCONNECT_AFTER);
  assert.equal(c['mqtt.connections.closed_refusals'], 1);
  await eventually(() => assert.equal(lines('sensor-1', 'too_many_refusals').length, 1));
});

test('a client flooding refused subscriptions as fast as it can writes a handful of lines, not one per filter', { timeout: 30_000 }, async () => {
  const url = new URL(gw.mqttUrl);
  const socket = createConnection({ host: url.hostname, port: Number(url.port) });
  socket.on('error', () => {});
  open.push(socket);
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  const connack = new Promise<Buffer>((resolve) => socket.once('data', resolve));
  socket.write(connectPacket('sensor-3', 60, true, { username: 'sensor-3', password: 'pw-3' }));
  // The flood starts once logged in (aedes closes a connection that sends too much before its CONNACK).
  assert.equal((await connack)[3], 0, 'CONNACK accepted');
  socket.resume();
  // 2,000 SUBSCRIBEs for forbidden filters, sent without waiting for SUBACKs.
  const filter = Buffer.from('devices/sensor-2/#');
  const subscribes = Array.from({ length: 2000 }, (_, i) => {
    const body = Buffer.alloc(2 + 2 + filter.length + 1);
    body.writeUInt16BE((i % 65535) + 1, 0);
    body.writeUInt16BE(filter.length, 2);
    filter.copy(body, 4);
    body[4 + filter.length] = 1;
    return packet(0x82, body);
  });
  socket.write(Buffer.concat(subscribes));
  await closed;
  // Everything the gateway logs about the client arrives within an interval or two of its disconnect.
  await eventually(() => assert.equal(lines('sensor-3', 'too_many_refusals').length, 1), { timeoutMs: 5000 });
  await eventually(() => assert.ok(lines('sensor-3', 'acl').some((l) => typeof l['suppressed'] === 'number')), { timeoutMs: 5000 });
  const about = gw.logs.filter((l) => l['clientId'] === 'sensor-3');
  assert.ok(about.length <= 4, `log lines about the flooding client: ${about.length}\n${JSON.stringify(about)}`);
});

test('an MQTT 5 client publishing outside its ACL (left connected per refusal) is disconnected after disconnectAfter refusals', { timeout: 30_000 }, async () => {
  const client = await device('sensor-2', { protocolVersion: 5 });
  const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
  const before = (await counters())['mqtt.connections.closed_refusals'] ?? 0;
  for (let i = 0; i < DISCONNECT_AFTER; i++) client.publish('devices/sensor-1/telemetry/t', 'forbidden', { qos: 0 });
  await closed;
  assert.equal((await counters())['mqtt.connections.closed_refusals'], before + 1);
  assert.equal(lines('sensor-2', 'acl').filter((l) => l['suppressed'] === undefined).length, 1);
});

test('refused logins from one address are logged once per reason and interval', { timeout: 30_000 }, async () => {
  const url = new URL(gw.mqttUrl);
  const attempts = Array.from({ length: 30 }, (_, i) => {
    const socket = createConnection({ host: url.hostname, port: Number(url.port), localAddress: '127.0.0.9' });
    socket.on('error', () => {});
    // Read, so that the close after the CONNACK is seen.
    socket.resume();
    open.push(socket);
    // A client id its login may not use: bad credentials, then too many failures.
    socket.write(connectPacket(`other-${i}`, 60, true, { username: 'sensor-1', password: 'pw-1' }));
    return new Promise<void>((resolve) => socket.once('close', () => resolve()));
  });
  await Promise.all(attempts);
  const refused = () => gw.logs.filter((l) => l['address'] === '127.0.0.9' && String(l['msg']).startsWith('connection refused'));
  const summed = () => refused().reduce((sum, l) => sum + (typeof l['suppressed'] === 'number' ? l['suppressed'] : 0), 0);
  const full = () => refused().filter((l) => l['suppressed'] === undefined);
  await eventually(() => assert.equal(full().length + summed(), 30), { timeoutMs: 5000 });
  const reasons = full().map((l) => l['reason']);
  assert.deepEqual([...new Set(reasons)].sort(), [...reasons].sort(), `one full line per reason: ${JSON.stringify(refused())}`);
  assert.ok(reasons.length <= 2, JSON.stringify(refused()));
});

test('refusals of a broker state limit count too: a client subscribing past subscriptionsPerClient again and again is disconnected after disconnectAfter of them', {
  timeout: 30_000,
}, async () => {
  const client = await device('sensor-4');
  const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
  const before = (await counters())['mqtt.connections.closed_refusals'] ?? 0;
  const granted = (filter: string) =>
    new Promise<number | undefined>((resolve) =>
      client.subscribe(filter, { qos: 1 }, (error, g) =>
        resolve(error === null || error === undefined ? g?.[0]?.qos : (error as unknown as { packet: { granted: number[] } }).packet.granted[0]),
      ),
    );
  for (let i = 0; i < SUBSCRIPTIONS_PER_CLIENT; i++) assert.equal(await granted(`devices/sensor-4/commands/${i}`), 1);
  for (let i = 0; i < DISCONNECT_AFTER - 1; i++) assert.equal(await granted(`devices/sensor-4/commands/over-${i}`), 128);
  assert.ok(client.connected, 'one short of disconnectAfter');
  client.subscribe('devices/sensor-4/commands/last', { qos: 1 });
  await closed;
  assert.equal((await counters())['mqtt.connections.closed_refusals'], before + 1);
  await eventually(() => assert.equal(lines('sensor-4', 'too_many_refusals').length, 1));
});
