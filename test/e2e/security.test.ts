import assert from 'node:assert/strict';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, test } from 'node:test';
import { type IClientOptions, type MqttClient, connectAsync } from 'mqtt';
import { type RunningFerry, startFerry } from '../harness/ferry-process.ts';
import { credential, writeGatewayTree } from '../harness/gateway-tree.ts';
import { tempDirs } from '../harness/temp.ts';
import { eventually } from '../harness/eventually.ts';

const tempDir = tempDirs('ferry-security-');
const PASSWORDS = { 'sensor-a': 'alpha-pass', 'sensor-b': 'bravo-pass', watcher: 'watch-pass', tech: 'tech-pass' };
let gw: RunningFerry;
const clients: MqttClient[] = [];

before(async () => {
  const root = tempDir();
  const config = writeGatewayTree(root, '{allowAnonymous: false, maxAuthFailures: 10, maxConnectionsPerAddress: 1000}', {
    'sensor.yaml': `name: sensor\nclientId: sensor-*\ncredentials:\n${await credential('sensor-a', PASSWORDS['sensor-a'])}${await credential('sensor-b', PASSWORDS['sensor-b'])}`,
    'staff.yaml': `name: staff\ncredentials:\n${await credential('watcher', PASSWORDS.watcher)}${await credential('tech', PASSWORDS.tech, ', clientId: "*"')}acl: {publish: [], subscribe: ["#", "$SYS/#"]}\n`,
  });
  gw = await startFerry(['--config', config, '--data-dir', join(root, 'data')]);
});

after(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true)));
  gw.child.kill('SIGTERM');
  await gw.exited;
});

async function connect(clientId: string, username?: keyof typeof PASSWORDS | string, password?: string, extra: IClientOptions = {}): Promise<MqttClient> {
  const client = await connectAsync(gw.mqttUrl, {
    clientId,
    reconnectPeriod: 0,
    connectTimeout: 5000,
    ...(username === undefined ? {} : { username, password: password ?? PASSWORDS[username as keyof typeof PASSWORDS] }),
    ...extra,
  });
  clients.push(client);
  return client;
}

async function refusal(clientId: string, username?: string, password?: string): Promise<string> {
  try {
    const client = await connect(clientId, username, password);
    await client.endAsync(true);
  } catch (error) {
    return (error as Error).message;
  }
  return 'connected';
}

/**
 * The CONNACK return code for an MQTT 3.1.1 CONNECT whose client id or username is `XXXXXXXX`
 * replaced by ill-formed UTF-8 (an overlong '/', an encoded surrogate cut short), which no
 * client library writes.
 */
async function illFormedRefusal(field: 'clientId' | 'username'): Promise<number | undefined> {
  const { createConnection } = await import('node:net');
  const mqttPacket = (await import('mqtt-packet')).default;
  const url = new URL(gw.mqttUrl);
  const socket = createConnection({ host: url.hostname, port: Number(url.port) });
  await new Promise((resolve) => socket.once('connect', resolve));
  const connect = {
    cmd: 'connect',
    protocolId: 'MQTT',
    protocolVersion: 4,
    clean: true,
    keepalive: 60,
    clientId: 'sensor-a',
    username: 'sensor-a',
    password: Buffer.from('x'),
  } as const;
  const packet = mqttPacket.generate({ ...connect, [field]: 'XXXXXXXX' });
  Buffer.concat([Buffer.from('ab'), Buffer.from([0xc0, 0xaf]), Buffer.from('cd'), Buffer.from([0xed, 0xa0])]).copy(packet, packet.indexOf('XXXXXXXX'));
  const parser = mqttPacket.parser();
  const connack = new Promise<number | undefined>((resolve) => {
    parser.on('packet', (p) => resolve((p as { returnCode?: number }).returnCode));
    socket.once('close', () => resolve(undefined));
  });
  socket.on('data', (chunk: Buffer) => parser.parse(chunk));
  socket.write(packet);
  const code = await connack;
  socket.destroy();
  return code;
}

async function counters(): Promise<Record<string, number>> {
  return ((await (await fetch(`${gw.adminUrl}/api/status`)).json()) as { counters: Record<string, number> }).counters;
}

/** A watcher subscribed to everything, recording what it receives. */
async function watcher(): Promise<{ seen: string[] }> {
  const client = await connect(`watcher`, 'watcher');
  const seen: string[] = [];
  client.on('message', (topic, payload) => seen.push(`${topic} ${payload.toString()}`));
  const granted = await client.subscribeAsync('#', { qos: 1 });
  assert.equal(granted[0]?.qos, 1);
  return { seen };
}

test('a device publishes to its own topics and is unaffected by everything below', async () => {
  const watch = await watcher();
  const a = await connect('sensor-a', 'sensor-a');
  await a.publishAsync('devices/sensor-a/telemetry/t', 'ok', { qos: 1 });
  await eventually(() => assert.ok(watch.seen.includes('devices/sensor-a/telemetry/t ok'), 'waiting for: watch.seen.includes(devices/sensor-a/telemetry/t ok)'), {
    timeoutMs: 5000,
  });
  assert.ok(watch.seen.includes('devices/sensor-a/telemetry/t ok'));
});

test('subscriptions outside the ACL are refused one filter at a time', async () => {
  const a = await connect('sensor-a', 'sensor-a');
  // mqtt.js rejects a SUBACK with any refused filter; the grants are in the error's packet.
  const subscribe = (filters: string | string[]) =>
    new Promise<{ topic: string; qos: number }[]>((resolve) =>
      a.subscribe(filters, { qos: 1 }, (error, granted) =>
        resolve(
          error === null || error === undefined
            ? (granted ?? [])
            : (error as unknown as { packet: { granted: number[] } }).packet.granted.map((qos, i) => ({ topic: [filters].flat()[i] as string, qos })),
        ),
      ),
    );
  for (const filter of ['#', '+/#', '$SYS/#', 'devices/sensor-b/#', 'devices/+/commands/#']) {
    const [grant] = await subscribe(filter);
    assert.equal(grant?.qos, 128, filter);
  }
  const mixed = await subscribe(['devices/sensor-a/commands/#', 'devices/sensor-b/commands/#']);
  assert.deepEqual(
    mixed.map((g) => [g.topic, g.qos]),
    [
      ['devices/sensor-a/commands/#', 1],
      ['devices/sensor-b/commands/#', 128],
    ],
  );
  assert.equal((await counters())['mqtt.subscribe.refused{reason=acl}'], 6);
});

test('publishing outside the ACL closes the connection and reaches nobody', async () => {
  const watch = await watcher();
  for (const topic of ['devices/sensor-b/telemetry/t', '$SYS/broker/x']) {
    const a = await connect('sensor-a', 'sensor-a');
    const closed = new Promise<void>((resolve) => a.once('close', () => resolve()));
    a.publish(topic, 'forbidden', { qos: 1 });
    await closed;
  }
  await sleep(100);
  assert.deepEqual(
    watch.seen.filter((m) => m.includes('forbidden')),
    [],
  );
  assert.ok(((await counters())['mqtt.publish.refused{reason=acl}'] ?? 0) >= 2);
});

test('a will on a forbidden topic is not published', async () => {
  const watch = await watcher();
  const before = (await counters())['mqtt.publish.refused{reason=acl}'] ?? 0;
  const a = await connect('sensor-a', 'sensor-a', undefined, { will: { topic: 'devices/sensor-b/status', payload: Buffer.from('will'), qos: 1, retain: false } });
  a.stream.destroy();
  await sleep(300);
  assert.deepEqual(
    watch.seen.filter((m) => m.endsWith(' will')),
    [],
  );
  assert.equal((await counters())['mqtt.publish.refused{reason=acl}'], before + 1);
});

test("another device's client id, bad ids and names, and anonymous clients are refused", async () => {
  assert.match(await refusal('sensor-b', 'sensor-a', PASSWORDS['sensor-a']), /Bad username or password/);
  for (const id of ['a+b', 'a#', 'a/b', 'a\u0000b']) assert.match(await refusal(id, 'sensor-a', PASSWORDS['sensor-a']), /Identifier rejected/, JSON.stringify(id));
  for (const name of ['sensor+', 'sensor/#', 'x\u0000']) assert.match(await refusal('sensor-a', name, 'x'), /Bad username or password/, JSON.stringify(name));
  // Ill-formed UTF-8 [MQTT-1.5.4-1]: 2 (identifier rejected) and 4 (bad username or password).
  assert.equal(await illFormedRefusal('clientId'), 2);
  assert.equal(await illFormedRefusal('username'), 4);
  assert.match(await refusal('sensor-anon'), /Not authorized/);
  const c = await counters();
  assert.equal(c['mqtt.connections.refused{reason=invalid_client_id}'], 5);
  assert.equal(c['mqtt.connections.refused{reason=invalid_username}'], 4);
  assert.equal(c['mqtt.connections.refused{reason=anonymous_not_allowed}'], 1);
});

test('a client id connected under one login is not taken over by another', async () => {
  const b = await connect('sensor-b', 'sensor-b');
  assert.match(await refusal('sensor-b', 'tech'), /Identifier rejected/);
  assert.equal(b.connected, true);
  await b.publishAsync('devices/sensor-b/telemetry/t', 'still here', { qos: 1 });
  assert.equal((await counters())['mqtt.connections.refused{reason=client_id_in_use}'], 1);
});

test('100 wrong passwords in a minute: refused, counted, the login blocked; other devices unaffected', async () => {
  const before = await counters();
  const results = [];
  for (let i = 0; i < 100; i++) results.push(await refusal('sensor-a', 'sensor-a', `guess-${i}`));
  assert.ok(results.every((r) => r !== 'connected'));
  const c = await counters();
  const delta = (key: string) => (c[key] ?? 0) - (before[key] ?? 0);
  // One wrong password came from an earlier test within the minute: the tenth blocks the login.
  assert.equal(delta('mqtt.connections.refused{reason=bad_credentials}'), 9);
  assert.equal(delta('mqtt.connections.refused{reason=too_many_failures}'), 91);
  // Even the right password is refused for sensor-a from this address now...
  assert.notEqual(await refusal('sensor-a', 'sensor-a', PASSWORDS['sensor-a']), 'connected');
  // ...while another device from the same address connects and publishes as before.
  const b = await connect('sensor-b', 'sensor-b');
  await b.publishAsync('devices/sensor-b/telemetry/t', 'fine', { qos: 1 });
});

test('a packet larger than mqtt.maxPacketBytes closes the connection before its body is read, and is counted', async () => {
  const { createConnection } = await import('node:net');
  const url = new URL(gw.mqttUrl);
  const socket = createConnection({ host: url.hostname, port: Number(url.port) });
  await new Promise((resolve) => socket.once('connect', resolve));
  // A CONNECT announcing 268,435,455 bytes (the protocol's largest remaining length).
  socket.write(Buffer.from([0x10, 0xff, 0xff, 0xff, 0x7f, 0x00, 0x04]));
  await new Promise<void>((resolve) => socket.once('close', () => resolve()));
  assert.equal((await counters())['mqtt.connections.refused{reason=packet_too_large}'], 1);
});

// sensor-b: the wrong-password test above has blocked sensor-a's login from this address.
test('over-deep, over-long and NUL topics are refused and counted; so are invalid filters', async () => {
  const before = await counters();
  for (const topic of [`devices/sensor-b/${'x/'.repeat(40)}y`, `devices/sensor-b/${'x'.repeat(2000)}`, 'devices/sensor-b/a\u0000b']) {
    const a = await connect('sensor-b', 'sensor-b');
    const closed = new Promise<void>((resolve) => a.once('close', () => resolve()));
    a.publish(topic, 'bad topic', { qos: 1 });
    await closed;
  }
  const a = await connect('sensor-b', 'sensor-b');
  const granted = await new Promise<number[]>((resolve) =>
    a.subscribe(`devices/sensor-b/commands/${'x/'.repeat(40)}#`, { qos: 1 }, (error) => resolve((error as unknown as { packet: { granted: number[] } }).packet.granted)),
  );
  assert.deepEqual(granted, [128]);
  const after = await counters();
  assert.equal((after['mqtt.publish.refused{reason=invalid_topic}'] ?? 0) - (before['mqtt.publish.refused{reason=invalid_topic}'] ?? 0), 3);
  assert.equal((after['mqtt.subscribe.refused{reason=invalid_filter}'] ?? 0) - (before['mqtt.subscribe.refused{reason=invalid_filter}'] ?? 0), 1);
});

// sensor-b: the wrong-password test above has blocked sensor-a's login from this address.
test('MQTT 5 devices meet the same refusals, told with MQTT 5 reason codes; a refused publish leaves the connection up', async () => {
  const watch = await watcher();
  const before = await counters();
  const v5 = { protocolVersion: 5 } as const;
  const b = await connect('sensor-b', 'sensor-b', undefined, v5);
  const subscribe = (filters: string | string[]) =>
    new Promise<number[]>((resolve) =>
      b.subscribe(filters, { qos: 1 }, (error, granted) =>
        resolve(error ? (error as unknown as { packet: { granted: number[] } }).packet.granted : (granted ?? []).map((g) => g.qos)),
      ),
    );
  for (const filter of ['#', '+/#', '$SYS/#', 'devices/sensor-a/#']) assert.deepEqual(await subscribe(filter), [0x87], filter);
  assert.deepEqual(await subscribe(['devices/sensor-b/commands/#', 'devices/sensor-a/commands/#']), [1, 0x87]);

  for (const topic of ['devices/sensor-a/telemetry/t', '$SYS/broker/x']) {
    await assert.rejects(b.publishAsync(topic, 'forbidden v5', { qos: 1 }), /Publish error: Not authorized/, topic);
  }
  assert.equal(b.connected, true);
  await b.publishAsync('devices/sensor-b/telemetry/t', 'allowed v5', { qos: 1 });

  // Same login, same client id: takes b's session over (b is done with).
  const willing = await connect('sensor-b', 'sensor-b', undefined, { ...v5, will: { topic: 'devices/sensor-a/status', payload: Buffer.from('will v5'), qos: 1, retain: false } });
  willing.stream.destroy();

  assert.match(await refusalV5('sensor-a', 'sensor-b', PASSWORDS['sensor-b']), /Bad User Name or Password/);
  assert.match(await refusalV5('a+b', 'sensor-b', PASSWORDS['sensor-b']), /Client Identifier not valid/);
  assert.match(await refusalV5('sensor-anon5'), /Not authorized/);

  await eventually(() => assert.ok(watch.seen.includes('devices/sensor-b/telemetry/t allowed v5'), 'waiting for: watch.seen.includes(devices/sensor-b/telemetry/t allowed v5)'), {
    timeoutMs: 5000,
  });
  await sleep(300);
  assert.deepEqual(
    watch.seen.filter((m) => m.includes('forbidden') || m.endsWith(' will v5')),
    [],
  );
  assert.ok(watch.seen.includes('devices/sensor-b/telemetry/t allowed v5'));
  const after = await counters();
  const delta = (key: string) => (after[key] ?? 0) - (before[key] ?? 0);
  assert.equal(delta('mqtt.subscribe.refused{reason=acl}'), 5);
  assert.equal(delta('mqtt.publish.refused{reason=acl}'), 3, 'two publishes and the will');
  assert.equal(delta('mqtt.connections.refused{reason=invalid_client_id}'), 1);
  assert.equal(delta('mqtt.connections.refused{reason=anonymous_not_allowed}'), 1);
});

async function refusalV5(clientId: string, username?: string, password?: string): Promise<string> {
  try {
    const client = await connect(clientId, username, password, { protocolVersion: 5 });
    await client.endAsync(true);
  } catch (error) {
    return (error as Error).message;
  }
  return 'connected';
}
