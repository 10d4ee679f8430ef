import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import pino from 'pino';
import { EmbeddedBroker } from '../../src/mqtt/embedded-broker.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { connectMqtt5 } from '../harness/mqtt5-gateway.ts';
import { eventually } from '../harness/eventually.ts';
import { RawMqtt5 } from '../harness/raw-mqtt5.ts';
import { randomName } from '../harness/services.ts';

const broker = await EmbeddedBroker.start({ host: '127.0.0.1', port: 0, logger: pino({ level: 'silent' }), counters: new CounterRegistry() });
after(() => broker.close());
const url = `mqtt://127.0.0.1:${broker.port}`;

test("a device's PUBLISH carrying a Subscription Identifier does not pass it on: subscribers get only their own [MQTT-3.3.4-6]", { timeout: 30_000 }, async () => {
  const topic = `sid/${randomName('t-')}`;
  const plain = await connectMqtt5(url, randomName('sid-plain-'));
  const identified = await connectMqtt5(url, randomName('sid-own-'));
  const { raw: publisher } = await RawMqtt5.connect(url, { clientId: randomName('sid-pub-') });
  try {
    await plain.client.subscribeAsync(topic, { qos: 1 });
    await identified.client.subscribeAsync(topic, { qos: 1, properties: { subscriptionIdentifier: 7 } });
    // Only a server may set it; a raw client sends what mqtt.js would not.
    publisher.send({ cmd: 'publish', topic, payload: Buffer.from('spoofed'), qos: 1, messageId: 1, dup: false, retain: true, properties: { subscriptionIdentifier: 42 } });
    await publisher.next('puback');
    await eventually(() => assert.equal(plain.publishes.length + identified.publishes.length, 2));
    assert.equal(plain.publishes[0]?.properties?.subscriptionIdentifier, undefined);
    assert.equal(identified.publishes[0]?.properties?.subscriptionIdentifier, 7);

    // Nor is it kept with the retained message.
    const later = await connectMqtt5(url, randomName('sid-later-'));
    try {
      await later.client.subscribeAsync(topic, { qos: 1 });
      await eventually(() => assert.equal(later.publishes.length, 1));
      assert.equal(later.publishes[0]?.payload.toString(), 'spoofed');
      assert.equal(later.publishes[0]?.properties?.subscriptionIdentifier, undefined);
    } finally {
      await later.client.endAsync(true);
    }
  } finally {
    publisher.end();
    await Promise.all([plain.client.endAsync(true), identified.client.endAsync(true)]);
  }
});
