import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connectAsync, type IPublishPacket } from 'mqtt';
import { mosquittoPub } from '../harness/mosquitto.ts';
import { randomName, requireService } from '../harness/services.ts';

test('mosquitto: a QoS 1 mosquitto_pub reaches an mqtt.js subscriber', { timeout: 30_000 }, async (t) => {
  const url = await requireService('mqtt');
  const client = await connectAsync(url, { clientId: randomName('ferry-test-'), reconnectPeriod: 0 });
  t.after(() => client.endAsync());

  const topic = randomName('ferry/test/harness/');
  const payload = JSON.stringify({ device: 'harness', at: Date.now() });
  await client.subscribeAsync(topic, { qos: 1 });
  const arrived = new Promise<[string, Buffer, IPublishPacket]>((resolve) => {
    client.once('message', (...message) => resolve(message));
  });

  const pub = await mosquittoPub(url, topic, payload);
  assert.equal(pub.code, 0, `mosquitto_pub failed: ${pub.stderr}`);

  const [gotTopic, gotPayload, packet] = await arrived;
  assert.equal(gotTopic, topic);
  assert.equal(gotPayload.toString(), payload);
  assert.equal(packet.qos, 1);
});
