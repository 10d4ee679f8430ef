// Issue 12: shared subscriptions `$share/<group>/<filter>` (MQTT 5 §4.8.2) on `ferry run`'s
// embedded broker, with mqtt.js (MQTT 5 and 3.1.1), mosquitto_sub and a raw MQTT 5 client.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { IDisconnectPacket, ISubackPacket } from 'mqtt-packet';
import { eventually } from '../harness/eventually.ts';
import { mosquittoSub } from '../harness/mosquitto.ts';
import { gatewayForFile } from '../harness/mqtt5-gateway.ts';
import { RawMqtt5 } from '../harness/raw-mqtt5.ts';
import { randomName } from '../harness/services.ts';

const file = gatewayForFile('ferry-issue12-shared-');
const { device } = file;

async function rawDevice(properties: Record<string, unknown> = {}, clientId = randomName('raw-')) {
  const { raw, connack } = await RawMqtt5.connect(file.gw.mqttUrl, { clientId, properties });
  after(() => raw.end());
  return { raw, connack };
}

async function rawSubscribe(raw: RawMqtt5, topic: string, options: { qos?: 0 | 1 | 2; nl?: boolean } = {}): Promise<ISubackPacket> {
  raw.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: options.qos ?? 1, nl: options.nl ?? false }] });
  return (await raw.next('suback')) as ISubackPacket;
}

const payloads = (list: { payload: Buffer | string }[]) => list.map((p) => p.payload.toString());

test('CONNACK says shared subscriptions are available', async () => {
  const d = await device(randomName('probe-'));
  assert.equal(d.connack.properties?.sharedSubscriptionAvailable, true);
});

test('each message goes to one member of the group, round robin; MQTT 5 and 3.1.1 clients share one group; a plain subscriber still gets all', async () => {
  const topic = `shared/${randomName('rr-')}`;
  const group = randomName('g');
  const members = [await device(randomName('a-')), await device(randomName('b-')), await device(randomName('c-'), { protocolVersion: 4 })];
  for (const m of members) await m.client.subscribeAsync(`$share/${group}/${topic}`, { qos: 1 });
  const plain = await device(randomName('plain-'));
  await plain.client.subscribeAsync(topic, { qos: 1 });
  const sender = await device(randomName('sender-'));
  const sent = Array.from({ length: 9 }, (_, i) => `m${i + 1}`);
  for (const payload of sent) await sender.client.publishAsync(topic, payload, { qos: 1 });
  await eventually(() =>
    assert.equal(
      members.reduce((n, m) => n + m.publishes.length, 0),
      9,
    ),
  );
  assert.deepEqual(
    members.map((m) => payloads(m.publishes)),
    [
      ['m1', 'm4', 'm7'],
      ['m2', 'm5', 'm8'],
      ['m3', 'm6', 'm9'],
    ],
  );
  for (const m of members) assert.equal(m.publishes[0]?.topic, topic, 'messages arrive on their own topic');
  await eventually(() => assert.deepEqual(payloads(plain.publishes), sent));
});

test('a member whose Receive Maximum window is full is skipped', async () => {
  const topic = `shared/${randomName('full-')}`;
  const filter = `$share/${randomName('g')}/${topic}`;
  // Joins first and never acknowledges: one message fills its window.
  const { raw: stuck } = await rawDevice({ receiveMaximum: 1 });
  await rawSubscribe(stuck, filter);
  const other = await device(randomName('other-'));
  await other.client.subscribeAsync(filter, { qos: 1 });
  const sender = await device(randomName('sender-'));
  for (const payload of ['m1', 'm2', 'm3', 'm4']) await sender.client.publishAsync(topic, payload, { qos: 1 });
  await eventually(() => assert.deepEqual(payloads(other.publishes), ['m2', 'm3', 'm4']));
  assert.deepEqual(payloads(stuck.publishes), ['m1']);
});

for (const qos of [1, 2] as const) {
  test(`QoS ${qos} messages a member had not acknowledged when it disconnected go to another member`, async () => {
    const topic = `shared/${randomName('redo-')}`;
    const filter = `$share/${randomName('g')}/${topic}`;
    const { raw: leaving } = await rawDevice();
    await rawSubscribe(leaving, filter, { qos });
    const staying = await device(randomName('staying-'));
    await staying.client.subscribeAsync(filter, { qos });
    const sender = await device(randomName('sender-'));
    for (const payload of ['m1', 'm2', 'm3', 'm4']) await sender.client.publishAsync(topic, payload, { qos });
    await eventually(() => assert.deepEqual(payloads(leaving.publishes), ['m1', 'm3']));
    await eventually(() => assert.deepEqual(payloads(staying.publishes), ['m2', 'm4']));
    leaving.end();
    await eventually(() => assert.deepEqual(payloads(staying.publishes).toSorted(), ['m1', 'm2', 'm3', 'm4']));
    await sender.client.publishAsync(topic, 'marker', { qos });
    await eventually(() => assert.equal(staying.publishes.at(-1)?.payload.toString(), 'marker'));
    assert.equal(staying.publishes.length, 5, 'each once');
  });
}

test('acknowledged messages are not sent again when a member leaves', async () => {
  const topic = `shared/${randomName('acked-')}`;
  const filter = `$share/${randomName('g')}/${topic}`;
  const leaving = await device(randomName('leaving-'));
  await leaving.client.subscribeAsync(filter, { qos: 1 });
  const staying = await device(randomName('staying-'));
  await staying.client.subscribeAsync(filter, { qos: 1 });
  const sender = await device(randomName('sender-'));
  for (const payload of ['m1', 'm2']) await sender.client.publishAsync(topic, payload, { qos: 1 });
  await eventually(() => assert.deepEqual(payloads(leaving.publishes), ['m1']));
  await leaving.client.endAsync();
  await sender.client.publishAsync(topic, 'marker', { qos: 1 });
  await eventually(() => assert.deepEqual(payloads(staying.publishes), ['m2', 'marker']));
});

test('a new shared subscription gets no retained messages', async () => {
  const topic = `shared/${randomName('retained-')}`;
  const sender = await device(randomName('sender-'));
  await sender.client.publishAsync(topic, 'retained', { qos: 1, retain: true });
  const member = await device(randomName('member-'));
  await member.client.subscribeAsync(`$share/${randomName('g')}/${topic}`, { qos: 1 });
  await sender.client.publishAsync(topic, 'live', { qos: 1 });
  await eventually(() => assert.deepEqual(payloads(member.publishes), ['live']));
});

for (const filter of ['$share/g+/x', '$share//x', '$share/g/', '$share/g']) {
  test(`a malformed shared subscription ${filter} is refused with SUBACK 0x8F [MQTT-4.8.2-1, MQTT-4.8.2-2]`, async () => {
    const { raw } = await rawDevice();
    const suback = await rawSubscribe(raw, filter);
    assert.deepEqual(suback.granted, [0x8f]);
    assert.equal(raw.closed, false);
  });
}

test('No Local on a shared subscription is a protocol error: DISCONNECT 0x82 [MQTT-3.8.3-4]', async () => {
  const { raw } = await rawDevice();
  raw.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: `$share/g/${randomName('nl-')}`, qos: 1, nl: true }] });
  const disconnect = (await raw.next('disconnect')) as IDisconnectPacket;
  assert.equal(disconnect.reasonCode, 0x82);
});

test('mosquitto_sub -V mqttv5 shares a group with an mqtt.js client', async () => {
  const topic = `shared/${randomName('mosq-')}`;
  const filter = `$share/${randomName('g')}/${topic}`;
  const other = await device(randomName('other-'));
  await other.client.subscribeAsync(filter, { qos: 1 });
  const sub = mosquittoSub(file.gw.mqttUrl, [filter], 2, { protocol: 'mqttv5', qos: 1, timeoutS: 10, readyOnSuback: true });
  await sub.ready;
  const sender = await device(randomName('sender-'));
  for (const payload of ['m1', 'm2', 'm3', 'm4']) await sender.client.publishAsync(topic, payload, { qos: 1 });
  const lines = await sub.messages;
  await eventually(() => assert.equal(other.publishes.length, 2));
  assert.deepEqual([...lines.map((l) => l.split(' ')[1]), ...payloads(other.publishes)].toSorted(), ['m1', 'm2', 'm3', 'm4']);
});

test('a member with a persistent session: while offline the others get its share; back, its shared subscription is restored', async () => {
  const topic = `shared/${randomName('session-')}`;
  const filter = `$share/${randomName('g')}/${topic}`;
  const id = randomName('sleepy-');
  const options = { clean: false, properties: { sessionExpiryInterval: 600 } };
  const sleepy = await device(id, options);
  await sleepy.client.subscribeAsync(filter, { qos: 1 });
  const awake = await device(randomName('awake-'));
  await awake.client.subscribeAsync(filter, { qos: 1 });
  await sleepy.client.endAsync();
  const sender = await device(randomName('sender-'));
  for (const payload of ['m1', 'm2']) await sender.client.publishAsync(topic, payload, { qos: 1 });
  await eventually(() => assert.deepEqual(payloads(awake.publishes), ['m1', 'm2']));
  const back = await device(id, options);
  assert.equal(back.connack.sessionPresent, true);
  for (const payload of ['m3', 'm4', 'm5', 'm6']) await sender.client.publishAsync(topic, payload, { qos: 1 });
  await eventually(() => assert.equal(back.publishes.length + awake.publishes.length, 6));
  assert.equal(back.publishes.length, 2, 'nothing queued for it while away; half of what came after');
});

test('a message redelivered to another member is not sent again to the persistent session that left it unacknowledged', async () => {
  const topic = `shared/${randomName('moved-')}`;
  const filter = `$share/${randomName('g')}/${topic}`;
  const id = randomName('leaving-');
  const { raw: leaving } = await RawMqtt5.connect(file.gw.mqttUrl, { clientId: id, clean: false, properties: { sessionExpiryInterval: 600 } });
  after(() => leaving.end());
  await rawSubscribe(leaving, filter);
  const staying = await device(randomName('staying-'));
  await staying.client.subscribeAsync(filter, { qos: 1 });
  const sender = await device(randomName('sender-'));
  for (const payload of ['m1', 'm2']) await sender.client.publishAsync(topic, payload, { qos: 1 });
  await eventually(() => assert.deepEqual(payloads(leaving.publishes), ['m1']));
  leaving.end();
  await eventually(() => assert.deepEqual(payloads(staying.publishes), ['m2', 'm1']));
  const back = await device(id, { clean: false, properties: { sessionExpiryInterval: 600 } });
  assert.equal(back.connack.sessionPresent, true);
  for (const payload of ['m3', 'm4']) await sender.client.publishAsync(topic, payload, { qos: 1 });
  await eventually(() => assert.equal(back.publishes.length + staying.publishes.length, 4));
  assert.deepEqual(payloads(back.publishes).length, 1);
  assert.ok(!payloads(back.publishes).includes('m1'));
});

test('a QoS 2 message a member with a persistent session left unacknowledged stays with it, and is sent again when it reconnects [MQTT-4.8.2-4]', async () => {
  const topic = `shared/${randomName('qos2-')}`;
  const filter = `$share/${randomName('g')}/${topic}`;
  const id = randomName('leaving-');
  const session = { clean: false, properties: { sessionExpiryInterval: 600 } };
  const { raw: leaving } = await RawMqtt5.connect(file.gw.mqttUrl, { clientId: id, ...session });
  after(() => leaving.end());
  await rawSubscribe(leaving, filter, { qos: 2 });
  const staying = await device(randomName('staying-'));
  await staying.client.subscribeAsync(filter, { qos: 2 });
  const sender = await device(randomName('sender-'));
  for (const payload of ['m1', 'm2']) await sender.client.publishAsync(topic, payload, { qos: 2 });
  await eventually(() => assert.deepEqual(payloads(leaving.publishes), ['m1']));
  leaving.end();
  await sender.client.publishAsync(topic, 'marker', { qos: 2 });
  await eventually(() => assert.equal(staying.publishes.at(-1)?.payload.toString(), 'marker'));
  assert.deepEqual(payloads(staying.publishes), ['m2', 'marker']);
  const back = await device(id, session);
  await eventually(() => assert.deepEqual(payloads(back.publishes), ['m1']));
});

test('a message a member refused (PUBACK with an error reason code) is not sent to another member [MQTT-4.8.2-6]', async () => {
  const topic = `shared/${randomName('refused-')}`;
  const filter = `$share/${randomName('g')}/${topic}`;
  const { raw: refusing } = await rawDevice();
  await rawSubscribe(refusing, filter);
  const other = await device(randomName('other-'));
  await other.client.subscribeAsync(filter, { qos: 1 });
  const sender = await device(randomName('sender-'));
  // Round robin: one of the first two messages goes to the refusing member, which refuses it.
  for (const payload of ['m1', 'm2']) await sender.client.publishAsync(topic, payload, { qos: 1 });
  const refused = (await refusing.next('publish')) as { payload: Buffer; messageId: number };
  refusing.send({ cmd: 'puback', messageId: refused.messageId, reasonCode: 0x80 });
  // It stays connected and takes its next share: the refusal settled the message.
  for (const payload of ['m3', 'm4']) await sender.client.publishAsync(topic, payload, { qos: 1 });
  await eventually(() => assert.equal(refusing.publishes.length, 1));
  await eventually(() => assert.equal(other.publishes.length, 2));
  const marker = `after-${randomName('m')}`;
  await other.client.unsubscribeAsync(filter);
  await sender.client.publishAsync(topic, marker, { qos: 1 });
  await eventually(() => assert.ok(payloads(refusing.publishes).includes(marker)));
  assert.ok(!payloads(other.publishes).includes(refused.payload.toString()), 'the refused message did not go to the other member');
  assert.equal(refusing.closed, false);
});
