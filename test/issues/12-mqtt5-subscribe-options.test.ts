// Issue 12: subscription identifiers and subscribe options (No Local, Retain As Published,
// Retain Handling; MQTT 5 §3.8.3.1, §3.3.4) on `ferry run`, with mqtt.js and mosquitto_sub.
import assert from 'node:assert/strict';
import type { IPublishPacket } from 'mqtt-packet';
import { join } from 'node:path';
import { test } from 'node:test';
import { eventually } from '../harness/eventually.ts';
import { startFerry } from '../harness/ferry-process.ts';
import { credential, writeGatewayTree } from '../harness/gateway-tree.ts';
import { mosquittoSub } from '../harness/mosquitto.ts';
import { connectMqtt5, gatewayForFile } from '../harness/mqtt5-gateway.ts';
import { RawMqtt5 } from '../harness/raw-mqtt5.ts';
import { randomName } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';

const file = gatewayForFile('ferry-issue12-subopts-');
const dollarDir = tempDirs('ferry-issue12-dollar-');
const { clients, device } = file;

const ids = (p: { properties?: { subscriptionIdentifier?: number | number[] } }) => [p.properties?.subscriptionIdentifier ?? []].flat();

test('a message carries the identifier of the subscription it matched, retained ones too (§3.3.2.3.8)', async () => {
  const base = `subid/${randomName('one-')}`;
  const sender = await device();
  await sender.client.publishAsync(`${base}/r`, 'retained', { qos: 1, retain: true });
  const d = await device();
  await d.client.subscribeAsync(`${base}/#`, { qos: 1, properties: { subscriptionIdentifier: 7 } });
  await sender.client.publishAsync(`${base}/live`, 'live', { qos: 1 });
  await eventually(() => assert.equal(d.publishes.length, 2));
  assert.deepEqual(
    d.publishes.map((p) => [p.payload.toString(), ids(p)]),
    [
      ['retained', [7]],
      ['live', [7]],
    ],
  );
});

test('a message matching several subscriptions of a client carries all their identifiers [MQTT-3.3.4-3, MQTT-3.3.4-4]', async () => {
  const base = `subid/${randomName('many-')}`;
  const d = await device();
  await d.client.subscribeAsync(`${base}/#`, { qos: 1, properties: { subscriptionIdentifier: 1 } });
  await d.client.subscribeAsync(`${base}/+/x`, { qos: 1, properties: { subscriptionIdentifier: 2 } });
  await d.client.subscribeAsync(`${base}/a/+`, { qos: 0 });
  const sender = await device();
  await sender.client.publishAsync(`${base}/a/x`, 'both', { qos: 1 });
  await sender.client.publishAsync(`${base}/b/y`, 'one', { qos: 1 });
  await eventually(() => assert.equal(d.publishes.at(-1)?.payload.toString(), 'one'));
  assert.deepEqual(
    d.publishes.map((p) => [p.payload.toString(), ids(p).toSorted()]),
    [
      ['both', [1, 2]],
      ['one', [1]],
    ],
  );
});

test('No Local: a client does not get its own messages on that subscription [MQTT-3.8.3-3]', async () => {
  const topic = `opts/${randomName('nl-')}`;
  const d = await device();
  await d.client.subscribeAsync(topic, { qos: 1, nl: true });
  const other = await device();
  await d.client.publishAsync(topic, 'own', { qos: 1 });
  await other.client.publishAsync(topic, 'other', { qos: 1 });
  await eventually(() => assert.equal(d.publishes.length, 1));
  assert.deepEqual(
    d.publishes.map((p) => p.payload.toString()),
    ['other'],
  );
});

test('Retain As Published keeps the RETAIN flag of a live message; without it the flag is 0 [MQTT-3.3.1-12, MQTT-3.3.1-13]', async () => {
  const topic = `opts/${randomName('rap-')}`;
  const kept = await device();
  await kept.client.subscribeAsync(topic, { qos: 1, rap: true, rh: 2 });
  const cleared = await device();
  await cleared.client.subscribeAsync(topic, { qos: 1, rap: false, rh: 2 });
  const sender = await device();
  await sender.client.publishAsync(topic, 'r', { qos: 1, retain: true });
  await eventually(() => assert.equal(kept.publishes.length + cleared.publishes.length, 2));
  assert.equal(kept.publishes[0]?.retain, true);
  assert.equal(cleared.publishes[0]?.retain, false);
});

test('Retain Handling: 0 sends retained messages on every SUBSCRIBE, 1 only for a new subscription, 2 never [MQTT-3.3.1-9, MQTT-3.3.1-10, MQTT-3.3.1-11]', async () => {
  const topic = `opts/${randomName('rh-')}`;
  const sender = await device();
  await sender.client.publishAsync(topic, 'retained', { qos: 1, retain: true });
  const got: Record<string, number> = {};
  for (const rh of [0, 1, 2] as const) {
    const d = await device();
    await d.client.subscribeAsync(topic, { qos: 1, rh });
    await d.client.subscribeAsync(topic, { qos: 1, rh });
    await sender.client.publishAsync(topic, 'marker', { qos: 1 });
    await eventually(() => assert.equal(d.publishes.at(-1)?.payload.toString(), 'marker'));
    got[rh] = d.publishes.filter((p) => p.payload.toString() === 'retained').length;
  }
  assert.deepEqual(got, { 0: 2, 1: 1, 2: 0 });
});

test('mosquitto_sub -V mqttv5 with a subscription identifier and Retain As Published gets a live retained message with RETAIN 1', async () => {
  const topic = `opts/${randomName('mosq-')}`;
  const sub = mosquittoSub(file.gw.mqttUrl, [topic], 1, {
    protocol: 'mqttv5',
    qos: 1,
    timeoutS: 10,
    readyOnSuback: true,
    extraArgs: ['-D', 'subscribe', 'subscription-identifier', '42', '--retain-as-published', '-F', '%r %t %p'],
  });
  await sub.ready;
  const sender = await device();
  await sender.client.publishAsync(topic, 'live', { qos: 1, retain: true });
  assert.deepEqual(await sub.messages, [`1 ${topic} live`]);
});

test('a message queued for an offline session carries its subscription identifier when it is sent (§3.3.2.3.8)', async () => {
  const id = randomName('sleepy-');
  const topic = `subid/${id}`;
  const options = { clean: false, properties: { sessionExpiryInterval: 600 } };
  const first = await device(id, options);
  await first.client.subscribeAsync(topic, { qos: 1, properties: { subscriptionIdentifier: 9 } });
  await first.client.endAsync();
  const sender = await device();
  await sender.client.publishAsync(topic, 'queued', { qos: 1 });
  const back = await device(id, options);
  await eventually(() => assert.equal(back.publishes.length, 1));
  assert.deepEqual(ids(back.publishes[0] as { properties?: { subscriptionIdentifier?: number } }), [9]);
});

test('a message reaches a wildcard subscription at the lower of its QoS and the QoS granted [MQTT-3.8.4-8]', async () => {
  const base = `qos/${randomName('wild-')}`;
  const d = await device();
  await d.client.subscribeAsync(`${base}/+`, { qos: 1 });
  const sender = await device();
  await sender.client.publishAsync(`${base}/x`, 'two', { qos: 2 });
  await eventually(() => assert.equal(d.publishes.length, 1));
  assert.equal(d.publishes[0]?.qos, 1);
});

test('a message matching overlapping subscriptions of a client goes once, at the highest QoS granted among them [MQTT-3.3.4-2]', async () => {
  const base = `qos/${randomName('overlap-')}`;
  const d = await device();
  // The lower one first and the higher one after, and the other way round on a second topic:
  // whichever subscription the broker runs first, the copy carries the highest QoS granted.
  await d.client.subscribeAsync(`${base}/#`, { qos: 0 });
  await d.client.subscribeAsync(`${base}/a`, { qos: 1 });
  await d.client.subscribeAsync(`${base}/b`, { qos: 0 });
  await d.client.subscribeAsync(`${base}/+`, { qos: 2 });
  const sender = await device();
  await sender.client.publishAsync(`${base}/a`, 'a', { qos: 2 });
  await sender.client.publishAsync(`${base}/b`, 'b', { qos: 2 });
  await sender.client.publishAsync(`${base}/c`, 'c', { qos: 1 });
  await sender.client.publishAsync(`${base}/a/z`, 'deep', { qos: 1 });
  await eventually(() => assert.equal(d.publishes.length, 4));
  assert.deepEqual(d.publishes.map((p) => [p.payload.toString(), p.qos]).toSorted(), [
    ['a', 2],
    ['b', 2],
    ['c', 1],
    ['deep', 0],
  ]);
});

test('a message queued for an offline session goes at the highest QoS granted among the subscriptions it matches [MQTT-3.8.4-8, MQTT-3.3.4-2]', async () => {
  const id = randomName('sleepy-');
  const base = `qos/${id}`;
  const options = { clean: false, properties: { sessionExpiryInterval: 600 } };
  const first = await device(id, options);
  await first.client.subscribeAsync(`${base}/#`, { qos: 0 });
  await first.client.subscribeAsync(`${base}/+`, { qos: 1 });
  await first.client.endAsync();
  const sender = await device();
  await sender.client.publishAsync(`${base}/x`, 'queued', { qos: 2 });
  const back = await device(id, options);
  await eventually(() => assert.equal(back.publishes.length, 1));
  await sender.client.publishAsync(`${base}/y`, 'live', { qos: 2 });
  await eventually(() => assert.equal(back.publishes.length, 2));
  assert.deepEqual(
    back.publishes.map((p) => [p.payload.toString(), p.qos]),
    [
      ['queued', 1],
      ['live', 1],
    ],
  );
  // Both were acknowledged, so neither is in the session any more: a QoS 0 copy of the live one
  // would have left its queued copy behind, to be sent again on the next connection.
  await back.client.endAsync();
  const again = await device(id, options);
  await sender.client.publishAsync(`${base}/z`, 'marker', { qos: 1 });
  await eventually(() => assert.equal(again.publishes.at(-1)?.payload.toString(), 'marker'));
  assert.deepEqual(
    again.publishes.map((p) => p.payload.toString()),
    ['marker'],
  );
});

test("a shared subscription's copy goes at the QoS granted to it, whatever the client's other subscriptions grant [MQTT-3.8.4-8]", async () => {
  const topic = `qos/${randomName('shared-')}/b`;
  const base = topic.slice(0, topic.lastIndexOf('/'));
  const d = await device();
  // A wildcard at QoS 0 and another subscription at QoS 1: the client's own subscriptions overlap at mixed QoS.
  await d.client.subscribeAsync(`$share/${randomName('g')}/${topic}`, { qos: 1, properties: { subscriptionIdentifier: 5 } });
  await d.client.subscribeAsync(`${base}/#`, { qos: 0, properties: { subscriptionIdentifier: 6 } });
  await d.client.subscribeAsync(`${base}-other`, { qos: 1 });
  const sender = await device();
  await sender.client.publishAsync(topic, 'both', { qos: 1 });
  await eventually(() => assert.equal(d.publishes.length, 2));
  assert.deepEqual(d.publishes.map((p) => [ids(p), p.qos]).toSorted(), [
    [[5], 1],
    [[6], 0],
  ]);
});

test("a No Local subscription does not raise the QoS of the client's own message, which goes by its other subscriptions [MQTT-3.8.3-3]", async () => {
  const base = `qos/${randomName('own-')}`;
  const d = await device();
  await d.client.subscribeAsync(`${base}/#`, { qos: 2, nl: true });
  await d.client.subscribeAsync(`${base}/b`, { qos: 0 });
  await d.client.publishAsync(`${base}/b`, 'mine', { qos: 2 });
  const other = await device();
  await other.client.publishAsync(`${base}/b`, 'theirs', { qos: 2 });
  await eventually(() => assert.equal(d.publishes.length, 2));
  assert.deepEqual(
    d.publishes.map((p) => [p.payload.toString(), p.qos]),
    [
      ['mine', 0],
      ['theirs', 2],
    ],
  );
});

test('a retained message sent on SUBSCRIBE goes at most at the QoS granted [MQTT-3.8.4-8]', async () => {
  const base = `qos/${randomName('kept-')}`;
  const sender = await device();
  await sender.client.publishAsync(`${base}/b`, 'kept', { qos: 1, retain: true });
  const d = await device();
  await d.client.subscribeAsync(`${base}/#`, { qos: 0 });
  await eventually(() => assert.equal(d.publishes.length, 1));
  assert.equal(d.publishes[0]?.qos, 0);
});

test('a message sent to an offline-capable session at a lower QoS than published goes again at that QoS after a reconnect, DUP, same packet id [MQTT-3.8.4-8, MQTT-4.4.0-1]', async () => {
  const id = randomName('flaky-');
  const topic = `qos/${id}/x`;
  const properties = { sessionExpiryInterval: 600 };
  const { raw: first } = await RawMqtt5.connect(file.gw.mqttUrl, { clientId: id, clean: false, properties });
  first.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: `qos/${id}/+`, qos: 1, nl: false, rap: false, rh: 0 }] });
  await first.next('suback');
  const sender = await device();
  await sender.client.publishAsync(topic, 'twice', { qos: 2 });
  const sent = (await first.next('publish')) as IPublishPacket;
  assert.equal(sent.qos, 1);
  // No PUBACK: the connection ends, and the session sends it again.
  first.end();
  await eventually(() => assert.ok(first.closed));
  const { raw: back } = await RawMqtt5.connect(file.gw.mqttUrl, { clientId: id, clean: false, properties });
  const again = (await back.next('publish')) as IPublishPacket;
  assert.deepEqual([again.qos, again.dup, again.messageId, again.payload.toString()], [1, true, sent.messageId, 'twice']);
  back.send({ cmd: 'puback', messageId: again.messageId as number });
  back.end();
});

test("'+' matches an empty level for a persistent session too: a message to '/x' reaches '+/x', live and queued (§4.7.1.3)", async () => {
  const id = randomName('levels-');
  const options = { clean: false, properties: { sessionExpiryInterval: 600 } };
  const first = await device(id, options);
  let closed = false;
  first.client.on('close', () => (closed = true));
  await first.client.subscribeAsync(`+/${id}`, { qos: 1 });
  const sender = await device();
  await sender.client.publishAsync(`/${id}`, 'live', { qos: 1 });
  await eventually(() => assert.equal(first.publishes.length, 1));
  assert.equal(closed, false, 'still connected');
  await first.client.endAsync();
  await sender.client.publishAsync(`/${id}`, 'queued', { qos: 1 });
  const back = await device(id, options);
  await eventually(() => assert.equal(back.publishes.length, 1));
  assert.deepEqual(
    [...first.publishes, ...back.publishes].map((p) => [p.topic, p.payload.toString(), p.qos]),
    [
      [`/${id}`, 'live', 1],
      [`/${id}`, 'queued', 1],
    ],
  );
});

test("No Local for a persistent session: the client's own messages are not queued for it either, so after a reconnect it gets only the others' [MQTT-3.8.3-3]", async () => {
  const id = randomName('own-queue-');
  const options = { clean: false, properties: { sessionExpiryInterval: 600 } };
  const first = await device(id, options);
  await first.client.subscribeAsync(`nl/${id}/#`, { qos: 1, nl: true });
  for (const payload of ['mine-1', 'mine-2']) await first.client.publishAsync(`nl/${id}/x`, payload, { qos: 1 });
  await first.client.endAsync();
  const other = await device();
  await other.client.publishAsync(`nl/${id}/y`, 'theirs', { qos: 1 });
  const back = await device(id, options);
  await eventually(() => assert.ok(back.publishes.length > 0));
  await other.client.publishAsync(`nl/${id}/z`, 'marker', { qos: 1 });
  await eventually(() => assert.equal(back.publishes.at(-1)?.payload.toString(), 'marker'));
  assert.deepEqual(
    [...first.publishes, ...back.publishes].map((p) => p.payload.toString()),
    ['theirs', 'marker'],
  );
});

test("a topic starting with '$' is not queued for a persistent session's wildcard-first filter, as it is not sent live [MQTT-4.7.2-1]", async () => {
  // Devices may publish to '$' topics only where an ACL allows them: a gateway of its own.
  const root = dollarDir();
  const config = writeGatewayTree(root, '{allowAnonymous: false}', {
    'dev.yaml': `name: dev\ncredentials:\n${await credential('dev', 'dev-secret-1', ', clientId: "*"')}acl: {publish: ["$dev/#"], subscribe: ["#", "$dev/#"]}\n`,
  });
  const gw = await startFerry(['--config', config, '--data-dir', join(root, 'data')]);
  try {
    const id = randomName('dollar-');
    const login = { username: 'dev', password: 'dev-secret-1' };
    const options = { ...login, clean: false, properties: { sessionExpiryInterval: 600 } };
    const connectDev = async (clientId: string, more = {}) => {
      const d = await connectMqtt5(gw.mqttUrl, clientId, { ...login, ...more });
      clients.push(d.client);
      return d;
    };
    const first = await connectDev(id, options);
    await first.client.subscribeAsync('#', { qos: 1 });
    await first.client.subscribeAsync(`$dev/${id}/marker`, { qos: 1 });
    const sender = await connectDev(randomName('sender-'));
    await sender.client.publishAsync(`$dev/${id}/live`, 'live', { qos: 1 });
    await first.client.endAsync();
    await sender.client.publishAsync(`$dev/${id}/queued`, 'queued', { qos: 1 });
    await sender.client.publishAsync(`$dev/${id}/marker`, 'marker', { qos: 1 });
    const back = await connectDev(id, options);
    await eventually(() => assert.ok(back.publishes.some((p) => p.payload.toString() === 'marker')));
    assert.deepEqual(
      [...first.publishes, ...back.publishes].map((p) => p.topic),
      [`$dev/${id}/marker`],
    );
  } finally {
    gw.child.kill('SIGTERM');
    await gw.exited;
  }
});
