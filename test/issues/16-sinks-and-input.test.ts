// Issue 16, items 4, 8 and 9: device data steering the MQTT sinks, input the gateway took
// unchecked, and a device's resend stored twice. Each test runs against `ferry run` and fails
// on the code before the fix.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Server, type Socket, connect as tcpConnect, createConnection, createServer } from 'node:net';
import { after, before, describe, test } from 'node:test';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { fetchStatus, pendingOf } from '../harness/crashing-gateway.ts';
import { payloadOf, topicOf } from '../harness/devices.ts';
import { type RunningFerry, ferry, startFerry } from '../harness/ferry-process.ts';
import { credential, writeGatewayTree } from '../harness/gateway-tree.ts';
import { readTopic } from '../harness/kafka-read.ts';
import { connectPacket, publishPacket, subscribePacket } from '../harness/mqtt-wire.ts';
import { ResendingDevice } from '../harness/resending-device.ts';
import { checkStreams } from '../harness/sequence-check.ts';
import { randomName, requireService } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-issue16-sinks-');

async function counters(gw: RunningFerry): Promise<Record<string, number>> {
  return ((await (await fetch(`${gw.adminUrl}/api/status`)).json()) as { counters: Record<string, number> }).counters;
}

async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/** A connected mqtt.js client noting every message it receives as `topic payload`. */
async function listener(url: string, options: IClientOptions): Promise<MqttClient & { seen: string[] }> {
  const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...options });
  const seen: string[] = [];
  client.on('message', (topic, payload) => seen.push(`${topic} ${payload.toString()}`));
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
    client.once('close', () => reject(new Error('closed before CONNACK')));
  });
  return Object.assign(client, { seen });
}

describe('device data cannot steer the devices and mqttClient sinks (issue 16, item 4)', () => {
  const PASSWORDS = { 'sensor-1': 'one-pass', 'sensor-2': 'two-pass' };
  let gw: RunningFerry;
  let mosquitto: string;
  const prefix = randomName('ferry-issue16-');
  const clients: MqttClient[] = [];

  before(async () => {
    mosquitto = await requireService('mqtt');
    const root = tempDir();
    const config = writeGatewayTree(root, '{allowAnonymous: loopback}', {
      'sensor.yaml':
        `name: sensor\nclientId: sensor-*\ncredentials:\n${await credential('sensor-1', PASSWORDS['sensor-1'])}${await credential('sensor-2', PASSWORDS['sensor-2'])}` +
        'acl: {publish: ["devices/%c/#"], subscribe: ["devices/%c/#"]}\n',
    });
    const bridge = (name: string, filter: string, sink: string) =>
      writeFileSync(join(root, 'bridges', `${name}.yaml`), `name: ${name}\nfrom: {mqtt: {topics: ["${filter}"]}}\nto:\n  - ${sink}\n`);
    bridge('display', 'devices/+/telemetry/display', 'devices: {topic: "devices/${payload.display}/display"}');
    bridge('panel', 'devices/+/telemetry/panel', 'devices: {topic: "panels/${payload.panel}", onUnsafeTopicValue: escape}');
    bridge('command', 'devices/+/telemetry/cmd', 'devices: {topic: "devices/${payload.target}/commands/${payload.name}", allowedTopics: ["devices/+/commands/led"]}');
    bridge(
      'upstream',
      'devices/+/telemetry/site',
      `mqttClient: {url: "${mosquitto}", clientId: ${randomName('ferry-up-')}, topic: "${prefix}/sites/\${header.site}/data", batchTimeMs: 0}`,
    );
    bridge(
      'escaped',
      'devices/+/telemetry/site',
      `mqttClient: {url: "${mosquitto}", clientId: ${randomName('ferry-esc-')}, topic: "${prefix}/escaped/\${header.site}", onUnsafeTopicValue: escape, batchTimeMs: 0}`,
    );
    gw = await startFerry(['--config', config, '--data-dir', join(root, 'data')]);
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.endAsync(true)));
    gw?.child.kill('SIGTERM');
    await gw?.exited;
  });

  const login = async (clientId: keyof typeof PASSWORDS, extra: IClientOptions = {}) => {
    const client = await listener(gw.mqttUrl, { clientId, username: clientId, password: PASSWORDS[clientId], ...extra });
    clients.push(client);
    return client;
  };

  test("a payload field with '/' does not make the gateway publish to another device's commands", async () => {
    const victim = await login('sensor-2');
    await victim.subscribeAsync('devices/sensor-2/#', { qos: 1 });
    const sender = await login('sensor-1');
    await sender.publishAsync('devices/sensor-1/telemetry/display', JSON.stringify({ display: 'sensor-2/commands/unlock' }), { qos: 1 });
    await sender.publishAsync('devices/sensor-1/telemetry/display', JSON.stringify({ display: 'sensor-2' }), { qos: 1 });
    await until(() => victim.seen.length > 0, 'the second message on devices/sensor-2/display');
    await sleep(200);
    // Before the fix the first came as devices/sensor-2/commands/unlock/display, past sensor-1's ACL.
    assert.deepEqual(victim.seen, ['devices/sensor-2/display {"display":"sensor-2"}']);
    const c = await counters(gw);
    assert.equal(c['commands.invalid{bridge=display}'], 1, JSON.stringify(c));
    assert.equal(c['buffer.dead_letters{bridge=display,sink=devices}'], 1, JSON.stringify(c));
  });

  test('onUnsafeTopicValue: escape keeps the value in its level, percent-encoded', async () => {
    const watcher = await listener(gw.mqttUrl, { clientId: randomName('watch-') });
    clients.push(watcher);
    await watcher.subscribeAsync('panels/#', { qos: 1 });
    const sender = await login('sensor-1');
    await sender.publishAsync('devices/sensor-1/telemetry/panel', JSON.stringify({ panel: 'sensor-2/commands/+' }), { qos: 1 });
    await until(() => watcher.seen.length > 0, 'the escaped panel message');
    assert.deepEqual(watcher.seen, ['panels/sensor-2%2Fcommands%2F%2B {"panel":"sensor-2/commands/+"}']);
  });

  test('allowedTopics: a topic rendered outside them is refused', async () => {
    const victim = await login('sensor-2', { clientId: 'sensor-2' });
    await victim.subscribeAsync('devices/sensor-2/commands/#', { qos: 1 });
    const sender = await login('sensor-1');
    await sender.publishAsync('devices/sensor-1/telemetry/cmd', JSON.stringify({ target: 'sensor-2', name: 'unlock' }), { qos: 1 });
    await sender.publishAsync('devices/sensor-1/telemetry/cmd', JSON.stringify({ target: 'sensor-2', name: 'led' }), { qos: 1 });
    await until(() => victim.seen.length > 0, 'the allowed command');
    await sleep(200);
    assert.deepEqual(victim.seen, ['devices/sensor-2/commands/led {"target":"sensor-2","name":"led"}']);
    assert.equal((await counters(gw))['commands.invalid{bridge=command}'], 1);
  });

  test('an MQTT 5 user property with / and a newline does not reach an mqttClient topic verbatim', async () => {
    const upstream = await listener(mosquitto, { clientId: randomName('ferry-watch-') });
    clients.push(upstream);
    await upstream.subscribeAsync(`${prefix}/#`, { qos: 1 });
    const sender = await login('sensor-1', { protocolVersion: 5 });
    await sender.publishAsync('devices/sensor-1/telemetry/site', 'evil', { qos: 1, properties: { userProperties: { site: 'north/../../evil/\nx' } } });
    await sender.publishAsync('devices/sensor-1/telemetry/site', 'fine', { qos: 1, properties: { userProperties: { site: 'north' } } });
    await until(() => upstream.seen.length >= 3, `three messages under ${prefix}/ (seen: ${JSON.stringify(upstream.seen)})`);
    await sleep(300);
    assert.deepEqual(
      upstream.seen.filter((s) => s.startsWith(`${prefix}/sites/`)),
      [`${prefix}/sites/north/data fine`],
    );
    assert.deepEqual(upstream.seen.filter((s) => s.startsWith(`${prefix}/escaped/`)).sort(), [
      `${prefix}/escaped/north fine`,
      `${prefix}/escaped/north%2F..%2F..%2Fevil%2F%0Ax evil`,
    ]);
    const c = await counters(gw);
    assert.equal(c['mqtt.client.messages.rejected{bridge=upstream,reason=topic}'], 1, JSON.stringify(c));
    assert.equal(c['buffer.dead_letters{bridge=upstream,sink=mqttClient}'], 1, JSON.stringify(c));
  });
});

/** A raw MQTT 3.1.1 connection: what it received, and whether the gateway closed it. */
interface RawClient {
  readonly socket: Socket;
  /** Every byte received so far. */
  received(): Buffer;
  readonly closed: Promise<void>;
  isClosed(): boolean;
}

async function rawClient(gw: RunningFerry, clientId: string, login?: { username: string; password: string }, keepaliveSeconds = 60): Promise<RawClient> {
  const url = new URL(gw.mqttUrl);
  const socket = createConnection({ host: url.hostname, port: Number(url.port) });
  socket.on('error', () => {});
  let got = Buffer.alloc(0);
  let closed = false;
  socket.on('data', (chunk: Buffer) => (got = Buffer.concat([got, chunk])));
  const closedPromise = new Promise<void>((resolve) => socket.once('close', () => ((closed = true), resolve())));
  socket.write(connectPacket(clientId, keepaliveSeconds, true, login));
  await until(() => got.length >= 4 || closed, 'CONNACK');
  assert.equal(got[0], 0x20, 'CONNACK');
  assert.equal(got[3], 0, 'connection accepted');
  return { socket, received: () => got, closed: closedPromise, isClosed: () => closed };
}

describe('topics, filters and output the gateway took unchecked (issue 16, item 8)', () => {
  let gw: RunningFerry;
  let root: string;
  const clients: MqttClient[] = [];

  before(async () => {
    root = tempDir();
    const config = writeGatewayTree(root, '{allowAnonymous: loopback}', {
      'sensor.yaml': `name: sensor\nclientId: sensor-*\ncredentials:\n${await credential('sensor-1', 'one-pass')}acl: {publish: ["devices/%c/#"], subscribe: ["devices/%c/commands/#"]}\n`,
    });
    gw = await startFerry(['--config', config, '--data-dir', join(root, 'data')]);
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.endAsync(true)));
    gw?.child.kill('SIGTERM');
    await gw?.exited;
  });

  test('a PUBLISH whose topic has a newline or ill-formed UTF-8 closes the connection and is not stored', async () => {
    const topics: [string, Buffer][] = [
      ['newline', Buffer.from('devices/raw-1/telemetry/a\n2026-01-01T00:00:00.000Z  sensor-9  devices/sensor-9/telemetry/x')],
      ['escape sequence', Buffer.from('devices/raw-1/telemetry/\u001b[2J')],
      ['overlong "/"', Buffer.concat([Buffer.from('devices/raw-1/telemetry/a'), Buffer.from([0xc0, 0xaf]), Buffer.from('b')])],
      ['encoded surrogate', Buffer.concat([Buffer.from('devices/raw-1/telemetry/'), Buffer.from([0xed, 0xa0, 0x80])])],
    ];
    for (const [what, topic] of topics) {
      const raw = await rawClient(gw, 'raw-1');
      raw.socket.write(publishPacket(topic, Buffer.from(what), { qos: 1, id: 7 }));
      await Promise.race([raw.closed, sleep(3000)]);
      assert.equal(raw.isClosed(), true, `${what}: the connection stays open`);
      assert.equal(raw.received().length, 4, `${what}: something besides the CONNACK came back (a PUBACK?)`);
    }
    const c = await counters(gw);
    assert.equal(c['mqtt.publish.refused{reason=invalid_topic}'], topics.length, JSON.stringify(c));
    const history = await ferry(['history', '--data-dir', join(root, 'data'), '--json']);
    assert.equal(history.stdout.includes('raw-1'), false, history.stdout);
  });

  test("an ACL pattern ending in /# lets the device subscribe to the parent level, which MQTT's # matches", async () => {
    const device = await listener(gw.mqttUrl, { clientId: 'sensor-1', username: 'sensor-1', password: 'one-pass' });
    clients.push(device);
    const granted = await device.subscribeAsync('devices/sensor-1/commands', { qos: 1 });
    assert.deepEqual(
      granted.map((g) => g.qos),
      [1],
    );
    await assert.rejects(device.subscribeAsync('devices/sensor-1', { qos: 1 }), (error: { packet?: { granted?: number[] } }) => error.packet?.granted?.[0] === 128);
    const operator = await listener(gw.mqttUrl, { clientId: randomName('op-') });
    clients.push(operator);
    await operator.publishAsync('devices/sensor-1/commands', 'led on', { qos: 1 });
    await until(() => device.seen.length > 0, 'the command');
    assert.deepEqual(device.seen, ['devices/sensor-1/commands led on']);
  });

  test('a SUBSCRIBE with a misplaced wildcard closes the connection, as MQTT requires; one with a control character gets SUBACK 0x80', async () => {
    const malformed = await rawClient(gw, 'raw-2');
    malformed.socket.write(subscribePacket('devices/a+/b', 1, 3));
    await Promise.race([malformed.closed, sleep(3000)]);
    assert.equal(malformed.isClosed(), true);
    const control = await rawClient(gw, 'raw-3');
    control.socket.write(subscribePacket('devices/\n/#', 1, 4));
    await until(() => control.received().length >= 9, 'SUBACK');
    assert.deepEqual([...control.received().subarray(4, 9)], [0x90, 3, 0, 4, 0x80]);
    control.socket.destroy();
  });

  test('ferry history escapes the control characters of what devices sent: one line per message, no escape sequence', async () => {
    const device = await listener(gw.mqttUrl, { clientId: 'sensor-1', username: 'sensor-1', password: 'one-pass' });
    clients.push(device);
    const forged = 'ok\n2026-01-01T00:00:00.000Z  sensor-9  devices/sensor-9/telemetry/door  {"open":true}';
    await device.publishAsync('devices/sensor-1/telemetry/forge', forged, { qos: 1 });
    await device.publishAsync('devices/sensor-1/telemetry/csi', 'a\u009b31mred', { qos: 1 });
    let lines: string[] = [];
    await until(async () => {
      const out = await ferry(['history', '--data-dir', join(root, 'data'), '--topic', 'devices/sensor-1/telemetry/']);
      lines = out.stdout.split('\n').filter((l) => l !== '');
      return lines.length >= 2;
    }, 'both messages in the history');
    assert.equal(lines.length, 2, lines.join('\n'));
    assert.ok(lines[0]?.endsWith('devices/sensor-1/telemetry/forge  ok\\n2026-01-01T00:00:00.000Z  sensor-9  devices/sensor-9/telemetry/door  {"open":true}'), lines[0]);
    assert.ok(lines[1]?.endsWith('devices/sensor-1/telemetry/csi  a\\u009b31mred'), lines[1]);
    const json = await ferry(['history', '--data-dir', join(root, 'data'), '--topic', 'devices/sensor-1/telemetry/csi', '--json']);
    assert.equal(/[\u007f-\u009f]/.test(json.stdout), false, json.stdout);
    assert.equal((JSON.parse(json.stdout) as { payload: string }).payload, 'a\u009b31mred');
  });

  test('ferry validate reports a YAML alias bomb and an oversized file as config errors, without a stack trace', async () => {
    const dir = tempDir();
    mkdirSync(join(dir, 'bridges'));
    writeFileSync(join(dir, 'gateway.yaml'), 'bridges: [bridges]\ndevices: []\n');
    const bomb = ['name: bomb', 'from: {mqtt: {topics: ["a/#"]}}', 'to: [{history: {}}]', 'x0: &x0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
    for (let i = 1; i < 9; i++) bomb.push(`x${i}: &x${i} [${Array.from({ length: 9 }, () => `*x${i - 1}`).join(',')}]`);
    writeFileSync(join(dir, 'bridges', 'bomb.yaml'), `${bomb.join('\n')}\n`);
    writeFileSync(join(dir, 'bridges', 'huge.yaml'), `name: huge\n#${'x'.repeat(5 * 1024 * 1024)}\n`);
    const result = await ferry(['validate', '--config', join(dir, 'gateway.yaml')]);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /bomb\.yaml: YAML: aliases expand too far/);
    assert.match(result.stderr, /huge\.yaml: the file is \d+ bytes; a config file may have at most 4194304/);
    assert.match(result.stderr, /ferry: 2 problems in the config/);
    assert.doesNotMatch(result.stderr, /^\s+at /m);
  });
});

/**
 * A TCP gate in front of Kafka: closed, it accepts and drops every connection (Kafka is
 * "down"); opened, it forwards. Clients reach the broker through it only for their first
 * metadata request (the broker advertises its own address), which is all a closed gate needs
 * to stop.
 */
async function kafkaGate(kafka: string): Promise<{ address: string; open(): void; close(): void }> {
  const [host, port] = [kafka.slice(0, kafka.lastIndexOf(':')), Number(kafka.slice(kafka.lastIndexOf(':') + 1))];
  let open = false;
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
    if (!open) {
      socket.destroy();
      return;
    }
    const upstream = tcpConnect({ host, port });
    upstream.on('error', () => socket.destroy());
    socket.on('close', () => upstream.destroy());
    socket.pipe(upstream).pipe(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    address: `127.0.0.1:${(server.address() as { port: number }).port}`,
    open: () => {
      open = true;
    },
    close: () => {
      for (const socket of sockets) socket.destroy();
      server.close();
    },
  };
}

/** A gateway whose only bridge takes device telemetry into `topic` through `brokers`. */
async function kafkaGateway(brokers: string, topic: string, bridgeExtra = '', sourceExtra = ''): Promise<{ gw: RunningFerry; root: string }> {
  const root = tempDir();
  mkdirSync(join(root, 'bridges'));
  writeFileSync(join(root, 'gateway.yaml'), 'mqtt: {allowAnonymous: loopback}\nbridges: [bridges]\ndevices: []\n');
  writeFileSync(
    join(root, 'bridges', 'telemetry.yaml'),
    `name: telemetry\nfrom: {mqtt: {topics: ["devices/+/telemetry/#"]${sourceExtra}}}\n` +
      `to:\n  - kafka: {brokers: "${brokers}", topic: ${topic}, retries: 1, connectionTimeoutMs: 1000, requestTimeoutMs: 5000}\n${bridgeExtra}`,
  );
  return { gw: await startFerry(['--config', join(root, 'gateway.yaml'), '--data-dir', join(root, 'data')]), root };
}

async function drained(gw: RunningFerry, bridge: string): Promise<void> {
  await until(async () => pendingOf(await fetchStatus(gw.adminUrl), bridge) === 0, `the buffer of '${bridge}' to drain`, 60_000);
}

describe("a device's resend is stored once (issue 16, item 9)", () => {
  test('buffer full under overflow: refuse while devices reconnect: held messages of closed connections are dropped, none is stored twice', { timeout: 120_000 }, async (t) => {
    const [kafka] = await requireService('kafka');
    const gate = await kafkaGate(kafka as string);
    t.after(() => gate.close());
    const topic = randomName('ferry-issue16-overflow-');
    const { gw } = await kafkaGateway(gate.address, topic, 'buffer: {maxMessages: 60, overflow: refuse, retryMaxMs: 500}\n');
    t.after(async () => {
      gw.child.kill('SIGKILL');
      await gw.exited;
    });
    // mqtt.js devices, whose connections the test breaks: on a new connection mqtt.js publishes
    // again what has no PUBACK (one at a time, without DUP). And devices that give a connection
    // up themselves when no PUBACK comes for 1.5 s, and resend all of it with DUP.
    const PER_DEVICE = 50;
    const devices = await Promise.all(Array.from({ length: 2 }, (_, i) => listener(gw.mqttUrl, { clientId: `overflow-${i}`, reconnectPeriod: 100, clean: true })));
    t.after(() => Promise.all(devices.map((d) => d.endAsync(true))));
    const url = new URL(gw.mqttUrl);
    const resending = Array.from(
      { length: 2 },
      (_, i) =>
        new ResendingDevice({
          host: url.hostname,
          port: Number(url.port),
          clientId: `overflow-dup-${i}`,
          quota: PER_DEVICE,
          window: PER_DEVICE,
          intervalMs: 5,
          ackTimeoutMs: 1500,
        }),
    );
    t.after(() => resending.forEach((d) => d.close()));
    const acked = devices.flatMap((device) =>
      Array.from({ length: PER_DEVICE }, (_, seq) =>
        device.publishAsync(topicOf(device.options.clientId as string), payloadOf(device.options.clientId as string, seq), { qos: 1 }),
      ),
    );
    const total = (devices.length + resending.length) * PER_DEVICE;
    const unacked = total - 60;
    await until(async () => (await fetchStatus(gw.adminUrl)).buffer.held >= unacked, `${unacked} messages held`);
    const heldAfter: number[] = [];
    for (let cycle = 0; cycle < 3; cycle++) {
      // The connection dies under the device; it reconnects and publishes its unacknowledged messages again.
      for (const device of devices) device.stream.destroy();
      await sleep(300);
      await until(() => devices.every((d) => d.connected), 'the devices reconnected');
      await sleep(1500); // the buffer tries its held messages every second
      heldAfter.push((await fetchStatus(gw.adminUrl)).buffer.held);
    }
    t.diagnostic(`held after each reconnect cycle: ${heldAfter.join(', ')}; connections given up by the resending devices: ${resending.map((d) => d.givenUp).join('/')}`);
    assert.ok(
      resending.every((d) => d.givenUp >= 2),
      'the resending devices did not reconnect',
    );
    // Before the fix the held count grew by the resent copies with each cycle.
    for (const held of heldAfter) assert.ok(held <= unacked, `held ${held} > ${unacked} unacknowledged messages: ${heldAfter.join(', ')}`);
    gate.open();
    await Promise.all([...acked, ...resending.map((d) => d.done)]);
    await drained(gw, 'telemetry');
    const records = await readTopic([kafka as string], topic, 60_000);
    const counts = new Map<string, number>();
    for (const r of records) counts.set(r.value?.toString() ?? '', (counts.get(r.value?.toString() ?? '') ?? 0) + 1);
    const twice = [...counts].filter(([, n]) => n > 1);
    assert.deepEqual(twice, [], `${twice.length} messages in Kafka more than once`);
    assert.equal(counts.size, total);
    const c = (await fetchStatus(gw.adminUrl)).counters;
    assert.ok((c['buffer.abandoned{bridge=telemetry}'] ?? 0) > 0, JSON.stringify(c));
  });

  test('the gateway frozen (SIGSTOP) under QoS 1 load: devices give up, resend with DUP on a new connection, and nothing is stored twice', { timeout: 180_000 }, async (t) => {
    const [kafka] = await requireService('kafka');
    const topic = randomName('ferry-issue16-freeze-');
    const { gw } = await kafkaGateway(kafka as string, topic, 'buffer: {retryMaxMs: 500}\n');
    t.after(async () => {
      gw.child.kill('SIGCONT');
      gw.child.kill('SIGKILL');
      await gw.exited;
    });
    const url = new URL(gw.mqttUrl);
    const devices = Array.from(
      { length: 3 },
      (_, i) => new ResendingDevice({ host: url.hostname, port: Number(url.port), clientId: `freeze-${i}`, quota: 600, window: 40, intervalMs: 10, ackTimeoutMs: 1000 }),
    );
    t.after(() => devices.forEach((d) => d.close()));
    const acked = () => devices.reduce((n, d) => n + d.acked.size, 0);
    for (const at of [200, 900]) {
      await until(() => acked() >= at, `${at} messages acknowledged`, 30_000);
      gw.child.kill('SIGSTOP');
      await sleep(3000);
      gw.child.kill('SIGCONT');
    }
    await Promise.race([Promise.all(devices.map((d) => d.done)), sleep(60_000).then(() => Promise.reject(new Error(`devices not done: ${acked()} acknowledged`)))]);
    await drained(gw, 'telemetry');
    const report = checkStreams(await readTopic([kafka as string], topic, 60_000), devices);
    const c = (await fetchStatus(gw.adminUrl)).counters;
    t.diagnostic(
      `given up ${devices.map((d) => d.givenUp).join('/')} connections; republished ${devices.reduce((n, d) => n + d.republished, 0)}; ` +
        `${report.records} records, ${report.duplicates} duplicates (${report.republished} stored twice); duplicates recognised: ${c['mqtt.publish.duplicates{qos=1}'] ?? 0}; abandoned: ${c['buffer.abandoned{bridge=telemetry}'] ?? 0}`,
    );
    assert.ok(
      devices.every((d) => d.givenUp > 0),
      'a device never gave its connection up: the freeze was not felt',
    );
    assert.ok((c['mqtt.publish.duplicates{qos=1}'] ?? 0) > 0, 'no resend was recognised');
    assert.deepEqual(report.missing, []);
    assert.deepEqual(report.malformed, []);
    assert.deepEqual(report.violations, []);
    assert.equal(report.duplicates, 0, `${report.republished} stored twice, ${report.redelivered} redelivered`);
  });

  test('a QoS 1 will, published once its connection died, is stored: it is no resend anybody will send', async (t) => {
    const root = tempDir();
    const gw = await startFerry(['--config', writeGatewayTree(root, '{allowAnonymous: loopback}', {}), '--data-dir', join(root, 'data')]);
    t.after(async () => {
      gw.child.kill('SIGTERM');
      await gw.exited;
    });
    const dying = await listener(gw.mqttUrl, {
      clientId: 'will-dev',
      will: { topic: 'devices/will-dev/telemetry/status', payload: Buffer.from('offline'), qos: 1, retain: false },
    });
    dying.stream.destroy();
    await until(async () => (await ferry(['history', '--data-dir', join(root, 'data'), '--json'])).stdout.includes('"payload":"offline"'), 'the will in the history');
    await dying.endAsync(true);
  });

  test("messageId: a bridge derives each message's ferry-id from the device's own sequence number", async (t) => {
    const [kafka] = await requireService('kafka');
    const topic = randomName('ferry-issue16-id-');
    const { gw } = await kafkaGateway(kafka as string, topic, '', ', messageId: "${clientId}:${payload.seq}"');
    t.after(async () => {
      gw.child.kill('SIGTERM');
      await gw.exited;
    });
    const device = await listener(gw.mqttUrl, { clientId: 'seq-dev' });
    t.after(() => device.endAsync(true));
    await device.publishAsync(topicOf('seq-dev'), payloadOf('seq-dev', 41), { qos: 1 });
    await device.publishAsync(topicOf('seq-dev'), payloadOf('seq-dev', 41), { qos: 1 }); // the device's own resend, as a new publish
    await device.publishAsync(topicOf('seq-dev'), '{"no":"seq"}', { qos: 1 });
    await drained(gw, 'telemetry');
    const records = await readTopic([kafka as string], topic, 30_000);
    const ids = records.map((r) => r.headers['ferry-id']);
    assert.deepEqual(ids.slice(0, 2), ['seq-dev:41', 'seq-dev:41'], 'upstream can drop the second by its ferry-id');
    assert.match(ids[2] ?? '', /^[0-9a-f-]{36}$/, 'no seq: a generated id');
    assert.equal((await fetchStatus(gw.adminUrl)).counters['mqtt.messages.id_not_derived{bridge=telemetry}'], 1);

    const dir = tempDir();
    mkdirSync(join(dir, 'bridges'));
    writeFileSync(join(dir, 'gateway.yaml'), 'bridges: [bridges]\ndevices: []\n');
    writeFileSync(join(dir, 'bridges', 'b.yaml'), 'name: b\nfrom: {mqtt: {topics: ["devices/+/telemetry/#"], messageId: "${payload.seq}"}}\nto: [{history: {}}]\n');
    const result = await ferry(['validate', '--config', join(dir, 'gateway.yaml')]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /from\.mqtt\.messageId: template '\$\{payload\.seq\}' takes neither \$\{clientId\} nor \$\{username\}/);
  });
});
