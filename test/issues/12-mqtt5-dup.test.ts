// Issue 12: the DUP flag of PUBLISH packets the embedded broker sends (MQTT 5 §3.3.1.1), on
// `ferry run`, seen by a raw MQTT 5 client.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { eventually } from '../harness/eventually.ts';
import type { RunningFerry } from '../harness/ferry-process.ts';
import { startAnonymousGateway } from '../harness/mqtt5-gateway.ts';
import { RawMqtt5 } from '../harness/raw-mqtt5.ts';
import { randomName } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-issue12-dup-');
let gw: RunningFerry;

before(async () => {
  gw = await startAnonymousGateway(tempDir());
});

after(async () => {
  gw.child.kill('SIGTERM');
  await gw.exited;
});

async function raw(clientId = randomName('raw-'), connect: Record<string, unknown> = {}) {
  const { raw: client } = await RawMqtt5.connect(gw.mqttUrl, { clientId, ...connect });
  after(() => client.end());
  return client;
}

test("a publisher's resend (DUP 1) reaches subscribers with DUP 0: the flag is set by whether the outgoing packet is a resend [MQTT-3.3.1-3]", async () => {
  const topic = `dup/${randomName('live-')}`;
  const sub = await raw();
  sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 1 }] });
  await sub.next('suback');
  const pub = await raw();
  pub.send({ cmd: 'publish', topic, payload: Buffer.from('again'), qos: 1, messageId: 7, dup: true, retain: false });
  await pub.next('puback');
  await eventually(() => assert.equal(sub.publishes.length, 1));
  assert.equal(sub.publishes[0]?.dup, false);
});

test('a message sent again to a resumed session has DUP 1; one queued while it was away, never sent, has DUP 0 [MQTT-3.3.1-1, MQTT-4.4.0-1]', async () => {
  const id = randomName('sleepy-');
  const topic = `dup/${id}`;
  const session = { clean: false, properties: { sessionExpiryInterval: 600 } };
  const first = await raw(id, session);
  first.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 1 }] });
  await first.next('suback');
  const pub = await raw();
  pub.send({ cmd: 'publish', topic, payload: Buffer.from('sent'), qos: 1, messageId: 1, dup: false, retain: false });
  await eventually(() => assert.equal(first.publishes.length, 1));
  const sentId = first.publishes[0]?.messageId;
  first.end();
  await eventually(() => assert.equal(first.closed, true));
  pub.send({ cmd: 'publish', topic, payload: Buffer.from('queued'), qos: 1, messageId: 2, dup: false, retain: false });
  await pub.next('puback');
  await pub.next('puback');
  const back = await raw(id, session);
  await eventually(() => assert.equal(back.publishes.length, 2));
  assert.deepEqual(
    back.publishes.map((p) => [p.payload.toString(), p.dup, p.payload.toString() === 'sent' ? p.messageId === sentId : true]),
    [
      ['sent', true, true],
      ['queued', false, true],
    ],
  );
});

test('a QoS 2 message already sent is sent again to the resumed session even past its Message Expiry Interval; one never sent is dropped [MQTT-4.3.3-7, MQTT-3.3.2-5]', async () => {
  const id = randomName('late-');
  const topic = `dup/${id}`;
  const session = { clean: false, properties: { sessionExpiryInterval: 600 } };
  const first = await raw(id, session);
  first.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 2 }] });
  await first.next('suback');
  const pub = await raw();
  const publishedAt = Date.now();
  pub.send({ cmd: 'publish', topic, payload: Buffer.from('sent'), qos: 2, messageId: 1, dup: false, retain: false, properties: { messageExpiryInterval: 1 } });
  await eventually(() => assert.equal(first.publishes.length, 1));
  first.end();
  await eventually(() => assert.equal(first.closed, true));
  pub.send({ cmd: 'publish', topic, payload: Buffer.from('queued'), qos: 2, messageId: 2, dup: false, retain: false, properties: { messageExpiryInterval: 1 } });
  // Both expire one second after they were published: the test waits for that moment to pass.
  await eventually(() => assert.ok(Date.now() - publishedAt > 2100), { timeoutMs: 5000 });
  const back = await raw(id, session);
  pub.send({ cmd: 'publish', topic, payload: Buffer.from('marker'), qos: 2, messageId: 3, dup: false, retain: false });
  await eventually(() => assert.equal(back.publishes.at(-1)?.payload.toString(), 'marker'));
  assert.deepEqual(
    back.publishes.map((p) => [p.payload.toString(), p.dup]),
    [
      ['sent', true],
      ['marker', false],
    ],
  );
});
