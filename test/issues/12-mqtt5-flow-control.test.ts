// Issue 12: the limits an MQTT 5 device announces in CONNECT for what it receives, against
// `ferry run`: its Maximum Packet Size (§3.1.2.11.4) and its Receive Maximum (§3.1.2.11.3, §4.9).
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { eventually } from '../harness/eventually.ts';
import { mosquittoSub } from '../harness/mosquitto.ts';
import { gatewayCounters, gatewayForFile } from '../harness/mqtt5-gateway.ts';
import { RawMqtt5 } from '../harness/raw-mqtt5.ts';
import { randomName } from '../harness/services.ts';

const file = gatewayForFile('ferry-issue12-flow-');
const { device } = file;

/** A device on a raw socket, which sends its PUBACKs only when the test does, subscribed to `topic` at QoS 1. */
async function slowDevice(topic: string, receiveMaximum: number): Promise<RawMqtt5> {
  const { raw } = await RawMqtt5.connect(file.gw.mqttUrl, { clientId: randomName('slow-'), properties: { receiveMaximum } });
  after(() => raw.end());
  raw.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 1 }] });
  await raw.next('suback');
  return raw;
}

const big = 'x'.repeat(1000);
const oversize = (counters: Record<string, number>) => counters['mqtt.deliveries.discarded{reason=packet_too_large}'] ?? 0;

test('a PUBLISH larger than the Maximum Packet Size a device announced is not sent to it, and counted [MQTT-3.1.2-24]', async () => {
  const topic = `limits/${randomName('mps-')}`;
  const small = await device(randomName('small-'), { properties: { maximumPacketSize: 200 } });
  const roomy = await device(randomName('roomy-'));
  for (const d of [small, roomy]) await d.client.subscribeAsync(topic, { qos: 1 });
  const before = oversize(await gatewayCounters(file.gw));
  const sender = await device(randomName('sender-'));
  for (const [payload, qos] of [
    ['first', 1],
    [big, 1],
    [big, 0],
    ['last', 1],
  ] as const)
    await sender.client.publishAsync(topic, payload, { qos });
  await eventually(() => assert.equal(small.publishes.at(-1)?.payload.toString(), 'last'));
  assert.deepEqual(
    small.publishes.map((p) => p.payload.toString()),
    ['first', 'last'],
  );
  await eventually(() => assert.equal(roomy.publishes.length, 4, 'a device that announced no limit gets them all'));
  assert.equal(oversize(await gatewayCounters(file.gw)) - before, 2);
});

test('a QoS 1 message queued for an offline session and too large for the device is discarded, not sent again on every reconnect [MQTT-3.1.2-25]', async () => {
  const id = randomName('sleepy-');
  const topic = `limits/${id}`;
  const options = { clean: false, properties: { sessionExpiryInterval: 600, maximumPacketSize: 200 } };
  const first = await device(id, options);
  await first.client.subscribeAsync(topic, { qos: 1 });
  await first.client.endAsync();
  const sender = await device(randomName('sender-'));
  for (const payload of ['first', big, 'last']) await sender.client.publishAsync(topic, payload, { qos: 1 });
  const back = await device(id, { ...options, clean: false });
  await eventually(() => assert.equal(back.publishes.at(-1)?.payload.toString(), 'last'));
  assert.deepEqual(
    back.publishes.map((p) => p.payload.toString()),
    ['first', 'last'],
  );
  await back.client.endAsync();
  const again = await device(id, { ...options, clean: false });
  await sender.client.publishAsync(topic, 'marker', { qos: 1 });
  await eventually(() => assert.equal(again.publishes.at(-1)?.payload.toString(), 'marker'));
  assert.deepEqual(
    again.publishes.map((p) => p.payload.toString()),
    ['marker'],
  );
});

test('mosquitto_sub -V mqttv5 with a Maximum Packet Size stays connected and gets the retained messages that fit', async () => {
  const base = `limits/${randomName('mosq-')}`;
  const sender = await device(randomName('sender-'));
  for (const [n, payload] of [['1', 'first'] as const, ['2', big] as const, ['3', 'last'] as const])
    await sender.client.publishAsync(`${base}/${n}`, payload, { qos: 1, retain: true });
  // Retained messages come with the SUBACK: no wait for a subscription mosquitto_sub cannot signal.
  const sub = mosquittoSub(file.gw.mqttUrl, [`${base}/#`], 2, { protocol: 'mqttv5', qos: 1, timeoutS: 10, extraArgs: ['-D', 'connect', 'maximum-packet-size', '200'] });
  const lines = await sub.messages;
  assert.deepEqual(lines.toSorted(), [`${base}/1 first`, `${base}/3 last`]);
});

test('no more unacknowledged QoS 1 messages in flight to a device than its Receive Maximum; the rest wait, in order [MQTT-3.3.4-9]', async () => {
  const topic = `limits/${randomName('rm-')}`;
  const slow = await slowDevice(topic, 2);
  const sender = await device(randomName('sender-'));
  for (const n of [1, 2, 3, 4, 5]) await sender.client.publishAsync(topic, `m${n}`, { qos: 1 });
  // A QoS 0 message is not held back by the window: once it is in, the QoS 1 ones
  // published before it would have been too.
  await sender.client.publishAsync(topic, 'marker', { qos: 0 });
  await eventually(() => assert.ok(slow.publishes.some((p) => p.payload.toString() === 'marker')));
  const qos1 = () => slow.publishes.filter((p) => p.qos === 1);
  assert.deepEqual(
    qos1().map((p) => p.payload.toString()),
    ['m1', 'm2'],
  );
  const acked = new Set<number>();
  const ackOne = () => {
    const next = qos1().find((p) => !acked.has(p.messageId as number));
    assert.ok(next !== undefined);
    acked.add(next.messageId as number);
    slow.send({ cmd: 'puback', messageId: next.messageId as number, reasonCode: 0 });
  };
  ackOne();
  await eventually(() => assert.equal(qos1().length, 3));
  await sender.client.publishAsync(topic, 'marker-2', { qos: 0 });
  await eventually(() => assert.ok(slow.publishes.some((p) => p.payload.toString() === 'marker-2')));
  assert.equal(qos1().length, 3, 'one PUBACK let one more in');
  ackOne();
  ackOne();
  await eventually(() =>
    assert.deepEqual(
      qos1().map((p) => p.payload.toString()),
      ['m1', 'm2', 'm3', 'm4', 'm5'],
    ),
  );
});

test("a message whose expiry passes while it waits for the device's Receive Maximum is not sent; one that waited goes with what is left of its interval [MQTT-3.3.2-5, MQTT-3.3.2-6]", async () => {
  const topic = `limits/${randomName('rm-expiry-')}`;
  const slow = await slowDevice(topic, 1);
  const expired = (counters: Record<string, number>) => counters['mqtt.deliveries.discarded{reason=expired}'] ?? 0;
  const before = expired(await gatewayCounters(file.gw));
  const sender = await device(randomName('sender-'));
  await sender.client.publishAsync(topic, 'first', { qos: 1 });
  await sender.client.publishAsync(topic, 'brief', { qos: 1, properties: { messageExpiryInterval: 1 } });
  await sender.client.publishAsync(topic, 'lasting', { qos: 1, properties: { messageExpiryInterval: 60 } });
  const first = (await slow.next('publish')) as { messageId: number; payload: Buffer };
  assert.equal(first.payload.toString(), 'first');
  // The device holds its PUBACK past the second message's expiry: both others wait meanwhile.
  await new Promise((resolve) => setTimeout(resolve, 2200));
  slow.send({ cmd: 'puback', messageId: first.messageId });
  const next = (await slow.next('publish')) as { payload: Buffer; properties?: { messageExpiryInterval?: number } };
  assert.equal(next.payload.toString(), 'lasting');
  const left = next.properties?.messageExpiryInterval ?? 0;
  assert.ok(left > 0 && left <= 58, `what is left of 60 s after waiting over 2 s: ${left}`);
  await eventually(async () => assert.equal(expired(await gatewayCounters(file.gw)) - before, 1));
  assert.equal(slow.publishes.length, 0, 'nothing else came');
});

test('a refusal keeps its Reason String only when it fits the Maximum Packet Size the device announced [MQTT-3.4.2-2]', async () => {
  const reasons: (string | undefined)[] = [];
  for (const properties of [{}, { maximumPacketSize: 16 }]) {
    const { raw } = await RawMqtt5.connect(file.gw.mqttUrl, { clientId: randomName('refused-'), properties });
    after(() => raw.end());
    // Publishing to a '$' topic is refused (the ACL of the anonymous default): PUBACK 0x87.
    raw.send({ cmd: 'publish', topic: '$SYS/x', payload: Buffer.from('no'), qos: 1, messageId: 1, dup: false, retain: false });
    const puback = (await raw.next('puback')) as { reasonCode?: number; properties?: { reasonString?: string }; length: number };
    assert.equal(puback.reasonCode, 0x87);
    assert.ok(puback.length + 2 <= (properties.maximumPacketSize ?? Number.POSITIVE_INFINITY));
    reasons.push(puback.properties?.reasonString);
    assert.equal(raw.closed, false);
  }
  assert.ok((reasons[0]?.length ?? 0) > 0, 'without a limit the refusal says why');
  assert.equal(reasons[1], undefined);
});
