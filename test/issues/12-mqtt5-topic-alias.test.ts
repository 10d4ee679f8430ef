// Issue 12: topic aliases an MQTT 5 device sends (MQTT 5 §3.3.2.3.4), against `ferry run`.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { IDisconnectPacket, IPublishPacket } from 'mqtt-packet';
import type { MqttClient } from 'mqtt';
import { eventually } from '../harness/eventually.ts';
import { ferry, type RunningFerry } from '../harness/ferry-process.ts';
import { mosquittoPub } from '../harness/mosquitto.ts';
import { connectMqtt5, startAnonymousGateway } from '../harness/mqtt5-gateway.ts';
import { RawMqtt5 } from '../harness/raw-mqtt5.ts';
import { randomName } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-issue12-alias-');
let gw: RunningFerry;
let dataDir: string;
const clients: MqttClient[] = [];

before(async () => {
  const root = tempDir();
  dataDir = `${root}/data`;
  gw = await startAnonymousGateway(root);
});

after(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true)));
  gw.child.kill('SIGTERM');
  await gw.exited;
});

async function watcher(filter: string) {
  const w = await connectMqtt5(gw.mqttUrl, randomName('watcher-'));
  clients.push(w.client);
  await w.client.subscribeAsync(filter, { qos: 1 });
  return w;
}

async function rawDevice() {
  const { raw, connack } = await RawMqtt5.connect(gw.mqttUrl, { clientId: randomName('dev-') });
  after(() => raw.end());
  return { raw, connack };
}

test('CONNACK announces a Topic Alias Maximum (16 by default)', async () => {
  const { connack } = await rawDevice();
  assert.equal(connack.properties?.topicAliasMaximum, 16);
});

test('an alias set with a topic, then sent alone, publishes to that topic; subscribers and bridges see the topic, never the alias [MQTT-3.3.2-12]', async () => {
  const device = randomName('sensor-');
  const topic = `devices/${device}/telemetry/alias`;
  const w = await watcher(topic);
  const { raw } = await rawDevice();
  raw.send({ cmd: 'publish', topic, payload: Buffer.from('one'), qos: 1, messageId: 1, retain: false, dup: false, properties: { topicAlias: 3 } });
  await raw.next('puback');
  raw.send({ cmd: 'publish', topic: '', payload: Buffer.from('two'), qos: 1, messageId: 2, retain: false, dup: false, properties: { topicAlias: 3 } });
  assert.equal(((await raw.next('puback')) as { reasonCode?: number }).reasonCode ?? 0, 0);
  // A new topic for the same alias replaces the mapping.
  raw.send({ cmd: 'publish', topic: `${topic}/b`, payload: Buffer.from('three'), qos: 0, retain: false, dup: false, properties: { topicAlias: 3 } });
  raw.send({ cmd: 'publish', topic: '', payload: Buffer.from('four'), qos: 1, messageId: 3, retain: false, dup: false, properties: { topicAlias: 3 } });
  await raw.next('puback');
  await eventually(() => assert.equal(w.publishes.length, 2));
  assert.deepEqual(
    w.publishes.map((p) => [p.topic, p.payload.toString(), p.properties?.topicAlias]),
    [
      [topic, 'one', undefined],
      [topic, 'two', undefined],
    ],
  );
  const rows = await eventually(async () => {
    const history = await ferry(['history', '--data-dir', dataDir, '--json']);
    const found = history.stdout
      .trim()
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as { topic: string; payload: string })
      .filter((r) => r.topic.startsWith(topic));
    assert.equal(found.length, 4, history.stderr);
    return found;
  });
  assert.deepEqual(
    rows.map((r) => [r.topic, r.payload]),
    [
      [topic, 'one'],
      [topic, 'two'],
      [`${topic}/b`, 'three'],
      [`${topic}/b`, 'four'],
    ],
  );
  assert.equal(raw.closed, false);
});

for (const [label, alias, ref] of [
  ['0', 0, 'MQTT-3.3.2-8'],
  ['over the Topic Alias Maximum', 17, 'MQTT-3.3.2-9'],
] as const) {
  test(`a topic alias of ${label} ends the connection with DISCONNECT 0x94 (Topic Alias invalid) [${ref}]`, async () => {
    const { raw } = await rawDevice();
    raw.send({ cmd: 'publish', topic: 'aliases/x', payload: Buffer.from('x'), qos: 0, retain: false, dup: false, properties: { topicAlias: alias } });
    const disconnect = (await raw.next('disconnect')) as IDisconnectPacket;
    assert.equal(disconnect.reasonCode, 0x94);
    await eventually(() => assert.equal(raw.closed, true));
  });
}

test('an invalid alias sent while a resumed session is still being sent its queue gets DISCONNECT 0x94 too, not a bare close', async () => {
  // The CONNACK goes out before the session's queued messages, and a device may publish at
  // once: with 900 queued, its publish is read while the queue is still being sent.
  const clientId = randomName('resumed-');
  const topic = `aliases/${randomName('queued-')}`;
  const session = { clientId, clean: false, properties: { sessionExpiryInterval: 300 } };
  const first = await RawMqtt5.connect(gw.mqttUrl, session);
  first.raw.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 1 }] });
  await first.raw.next('suback');
  first.raw.end();
  await eventually(() => assert.equal(first.raw.closed, true));
  const w = await watcher(topic);
  await Promise.all(Array.from({ length: 900 }, (_, n) => w.client.publishAsync(topic, `queued ${n}`, { qos: 1 })));
  const { raw, connack } = await RawMqtt5.connect(gw.mqttUrl, { ...session, properties: { ...session.properties, receiveMaximum: 1 } });
  raw.send({ cmd: 'publish', topic: 'aliases/x', payload: Buffer.from('x'), qos: 0, retain: false, dup: false, properties: { topicAlias: 0 } });
  after(() => raw.end());
  assert.equal(connack.sessionPresent, true);
  const disconnect = (await raw.next('disconnect')) as IDisconnectPacket;
  assert.equal(disconnect.reasonCode, 0x94);
  await eventually(() => assert.equal(raw.closed, true));
});

test('an alias sent alone that this connection never set is a protocol error: DISCONNECT 0x82, nothing published (§3.3.2.3.4, [MQTT-3.3.2-7])', async () => {
  const topic = `aliases/${randomName('unknown-')}`;
  const w = await watcher(topic);
  // Set on another connection: aliases do not carry over [MQTT-3.3.2-7].
  const { raw: other } = await rawDevice();
  other.send({ cmd: 'publish', topic, payload: Buffer.from('set'), qos: 1, messageId: 1, retain: false, dup: false, properties: { topicAlias: 5 } });
  await other.next('puback');
  const { raw } = await rawDevice();
  raw.send({ cmd: 'publish', topic: '', payload: Buffer.from('lost'), qos: 1, messageId: 1, retain: false, dup: false, properties: { topicAlias: 5 } });
  const disconnect = (await raw.next('disconnect')) as IDisconnectPacket;
  assert.equal(disconnect.reasonCode, 0x82);
  assert.equal(raw.packets.filter((p) => p.cmd === 'puback').length, 0);
  await eventually(() => assert.equal(raw.closed, true));
  other.send({ cmd: 'publish', topic: '', payload: Buffer.from('marker'), qos: 1, messageId: 2, retain: false, dup: false, properties: { topicAlias: 5 } });
  await eventually(() => assert.equal(w.publishes.at(-1)?.payload.toString(), 'marker'));
  assert.deepEqual(
    w.publishes.map((p) => p.payload.toString()),
    ['set', 'marker'],
  );
});

test('mqtt.js with autoAssignTopicAlias sends each topic once and aliases after; subscribers get every message on its topic', async () => {
  const base = `aliases/${randomName('auto-')}`;
  const w = await watcher(`${base}/#`);
  const device = await connectMqtt5(gw.mqttUrl, randomName('auto-'), { autoAssignTopicAlias: true });
  clients.push(device.client);
  const sent: IPublishPacket[] = [];
  device.client.on('packetsend', (p) => {
    if (p.cmd === 'publish') sent.push(p as IPublishPacket);
  });
  for (const n of [1, 2, 3]) for (const t of ['a', 'b']) await device.client.publishAsync(`${base}/${t}`, `${t}${n}`, { qos: 1 });
  assert.ok(
    sent.some((p) => p.topic === '' && p.properties?.topicAlias !== undefined),
    'mqtt.js sent aliases alone',
  );
  await eventually(() => assert.equal(w.publishes.length, 6));
  assert.deepEqual(
    w.publishes.map((p) => `${p.topic} ${p.payload.toString()}`),
    [1, 2, 3].flatMap((n) => [`${base}/a a${n}`, `${base}/b b${n}`]),
  );
});

test('mosquitto_pub -V mqttv5 with a topic alias: the repeats, sent with the alias alone, reach the topic', async () => {
  const topic = `aliases/${randomName('mosq-')}`;
  const w = await watcher(topic);
  const pub = await mosquittoPub(gw.mqttUrl, topic, 'again', { protocol: 'mqttv5', qos: 1, extraArgs: ['-D', 'publish', 'topic-alias', '1', '--repeat', '3'] });
  assert.equal(pub.code, 0, pub.stderr);
  await eventually(() => assert.equal(w.publishes.length, 3));
  assert.deepEqual(
    w.publishes.map((p) => `${p.topic} ${p.payload.toString()}`),
    [`${topic} again`, `${topic} again`, `${topic} again`],
  );
});
