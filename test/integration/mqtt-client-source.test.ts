import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connectAsync, type MqttClient } from 'mqtt';
import pino from 'pino';
import type { Delivery } from '../../src/core/delivery.ts';
import { mqttClientSource } from '../../src/mqtt/client-source.ts';
import { fromMqtt } from '../../src/lib/mqtt.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { sourceConformance } from '../conformance/source-suite.ts';
import { type PrivateMosquitto, startPrivateMosquitto } from '../harness/private-mosquitto.ts';
import { randomName } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';
import { makeCertificates } from '../harness/certs.ts';
import { eventually } from '../harness/eventually.ts';
import { freePorts } from '../harness/net.ts';

const tempDir = tempDirs('ferry-mqtt-client-');
let broker: PrivateMosquitto | undefined;
const privateBroker = async () => (broker ??= await startPrivateMosquitto(tempDir()));
before(privateBroker);
after(() => broker?.stop());

const ctx = () => ({ logger: pino({ level: 'silent' }), counters: new CounterRegistry(), dataDir: tempDir(), bridge: 'test' });

/** How many acknowledgements of `packet` the broker logged from `clientId`: what the broker was told, not what the client meant. */
function acksLogged(mosquitto: PrivateMosquitto, clientId: string, packet: 'PUBACK' | 'PUBREC'): number {
  return mosquitto
    .log()
    .split('\n')
    .filter((line) => line.includes(`Received ${packet} from ${clientId} `)).length;
}

/**
 * For the shared suite, "the producer is acknowledged" means the broker got Ferry's
 * acknowledgement: with an external broker the publisher's own PUBACK comes from the broker
 * at once. `produce` publishes with mqtt.js and resolves when the broker's log shows one more
 * PUBACK (PUBREC at QoS 2) from the source's client id.
 */
function suite(name: string, protocolVersion: 4 | 5, qos: 1): void {
  sourceConformance(name, {
    start: async () => {
      const mosquitto = await privateBroker();
      const topic = randomName('ext/conformance/');
      const clientId = randomName('ferry-src-');
      // The persistent session exists before the source connects, so nothing published
      // meanwhile is missed.
      const setup = await connectAsync(mosquitto.url, {
        clientId,
        clean: false,
        protocolVersion,
        reconnectPeriod: 0,
        ...(protocolVersion === 5 ? { properties: { sessionExpiryInterval: 600 } } : {}),
      });
      await setup.subscribeAsync(topic, { qos });
      await setup.endAsync();
      const publisher = await connectAsync(mosquitto.url, { clientId: randomName('pub-'), reconnectPeriod: 0 });
      let produced = 0;
      let cleaned = false;
      const config = mqttClientSource.schema.parse({ url: mosquitto.url, clientId, topics: [topic], qos, protocolVersion, reconnectMinMs: 50, reconnectMaxMs: 200 });
      return {
        // Through the public entry point (ferry/mqtt), as a library user makes it.
        source: fromMqtt(config, { name: 'test', logger: pino({ level: 'silent' }) }),
        produce: async (payload) => {
          const index = ++produced;
          await publisher.publishAsync(topic, payload, { qos });
          await eventually(
            () => {
              // Nobody waits for it after cleanup; the broker stopped logging for this topic.
              if (cleaned) return;
              assert.ok(acksLogged(mosquitto, clientId, 'PUBACK') >= index, `no PUBACK from ${clientId} for message ${index}`);
            },
            { timeoutMs: 60_000 },
          );
        },
        cleanup: async () => {
          cleaned = true;
          await publisher.endAsync(true);
        },
      };
    },
  });
}

suite('mqttClient (Mosquitto, MQTT 3.1.1, QoS 1)', 4, 1);
suite('mqttClient (Mosquitto, MQTT 5, QoS 1)', 5, 1);

describe('mqttClient source', () => {
  test('refuses qos 2 under MQTT 3.1.1, naming why', () => {
    const result = mqttClientSource.schema.safeParse({ url: 'mqtt://b:1883', clientId: 'c', topics: ['a/#'], qos: 2 });
    assert.equal(result.success, false);
    assert.match(String(result.error?.issues[0]?.message), /qos 2 needs protocolVersion 5/);
  });

  test('accepts shared subscriptions and refuses malformed ones', () => {
    const parse = (topics: string[]) => mqttClientSource.schema.safeParse({ url: 'mqtt://b:1883', clientId: 'c', topics }).success;
    assert.equal(parse(['$share/ferry/sensors/+/telemetry']), true);
    assert.equal(parse(['$share//sensors/#']), false);
    assert.equal(parse(['$share/ferry']), false);
    assert.equal(parse(['$share/ferry/a/#/b']), false);
  });

  test('MQTT 5, QoS 2: the broker gets the PUBREC only after the delivery is acked (one message at a time)', async () => {
    const mosquitto = await privateBroker();
    const topic = randomName('ext/qos2/');
    const clientId = randomName('ferry-src-');
    const config = mqttClientSource.schema.parse({ url: mosquitto.url, clientId, topics: [topic], qos: 2, protocolVersion: 5 });
    const received: Delivery[] = [];
    const subscription = mqttClientSource.create(config, ctx()).subscribe((d) => received.push(d));
    const publisher = await connectAsync(mosquitto.url, { reconnectPeriod: 0 });
    try {
      await eventually(() => assert.ok(mosquitto.log().includes(`${clientId} 2 ${topic}`), 'the source subscribed'), { timeoutMs: 20_000 });
      for (const payload of ['q2-a', 'q2-b']) await publisher.publishAsync(topic, payload, { qos: 2 });
      await eventually(() => assert.ok(received.length === 1, 'the first message arrived'), { timeoutMs: 20_000 });
      // The marker: the broker has sent the second message too, so a source that read on
      // before the first ack would have it.
      const sent = () =>
        mosquitto
          .log()
          .split('\n')
          .filter((l) => l.includes(`Sending PUBLISH to ${clientId} `)).length;
      await eventually(() => assert.ok(sent() >= 2, 'the broker sent both messages'), { timeoutMs: 20_000 });
      assert.equal(acksLogged(mosquitto, clientId, 'PUBREC'), 0, 'PUBREC before the delivery was acked');
      assert.equal(received.length, 1, 'the second QoS 2 message came before the first was acked');
      (received[0] as Delivery).ack();
      await eventually(() => assert.ok(received.length === 2, 'the second message arrived'), { timeoutMs: 20_000 });
      await eventually(() => assert.ok(acksLogged(mosquitto, clientId, 'PUBREC') === 1, 'the first PUBREC'), { timeoutMs: 20_000 });
      (received[1] as Delivery).ack();
      await eventually(() => assert.ok(acksLogged(mosquitto, clientId, 'PUBREC') === 2, 'the second PUBREC'), { timeoutMs: 20_000 });
      await eventually(
        () =>
          assert.ok(
            mosquitto
              .log()
              .split('\n')
              .filter((l) => l.includes(`Received PUBCOMP from ${clientId} `)).length === 2,
            'both exchanges completed',
          ),
        { timeoutMs: 20_000 },
      );
      assert.deepEqual(
        received.map((d) => Buffer.from(d.envelope.payload).toString()),
        ['q2-a', 'q2-b'],
      );
    } finally {
      subscription.unsubscribe();
      await publisher.endAsync(true);
    }
  });

  test('MQTT 5 user properties become headers; retained flag and QoS travel in the origin', async () => {
    const mosquitto = await privateBroker();
    const topic = randomName('ext/props/');
    const config = mqttClientSource.schema.parse({ url: mosquitto.url, clientId: randomName('ferry-src-'), topics: [`${topic}/#`], protocolVersion: 5 });
    const received: Delivery[] = [];
    const subscription = mqttClientSource.create(config, ctx()).subscribe((d) => {
      received.push(d);
      d.ack();
    });
    const publisher = await connectAsync(mosquitto.url, { protocolVersion: 5, reconnectPeriod: 0 });
    try {
      await eventually(() => assert.ok(mosquitto.log().includes(`${topic}/#`), 'the source subscribed'), { timeoutMs: 20_000 });
      await publisher.publishAsync(`${topic}/a`, 'x', { qos: 1, properties: { userProperties: { site: 'north', trace: 'abc' } } });
      await eventually(() => assert.ok(received.length === 1, 'the message arrived'), { timeoutMs: 20_000 });
      const [d] = received as [Delivery];
      assert.deepEqual(d.envelope.headers, { site: 'north', trace: 'abc' });
      assert.equal(d.envelope.topic, `${topic}/a`);
      assert.equal(d.envelope.origin.qos, 1);
      assert.equal(d.envelope.origin.source, 'mqttClient');
    } finally {
      subscription.unsubscribe();
      await publisher.endAsync(true);
    }
  });

  test('a shared subscription splits one stream between two sources, each message to exactly one', async () => {
    const mosquitto = await privateBroker();
    const topic = randomName('ext/shared/');
    const group = randomName('g');
    const counts = [0, 0];
    const seen = new Map<string, number>();
    const clientIds = [randomName('ferry-share0-'), randomName('ferry-share1-')];
    const subscriptions = [0, 1].map((i) =>
      mqttClientSource.create(mqttClientSource.schema.parse({ url: mosquitto.url, clientId: clientIds[i], topics: [`$share/${group}/${topic}/#`] }), ctx()).subscribe((d) => {
        counts[i] = (counts[i] as number) + 1;
        const payload = Buffer.from(d.envelope.payload).toString();
        seen.set(payload, (seen.get(payload) ?? 0) + 1);
        d.ack();
      }),
    );
    const publisher: MqttClient = await connectAsync(mosquitto.url, { reconnectPeriod: 0 });
    try {
      await eventually(
        () =>
          assert.ok(
            mosquitto
              .log()
              .split('\n')
              .filter((l) => l.includes(`$share/${group}/${topic}/#`)).length >= 2,
            'both sources subscribed',
          ),
        { timeoutMs: 20_000 },
      );
      const total = 200;
      for (let i = 0; i < total; i++) await publisher.publishAsync(`${topic}/d${i % 7}`, `m${i}`, { qos: 1 });
      await eventually(() => assert.ok(seen.size === total, `all ${total} messages arrived`), { timeoutMs: 20_000 });
      // The marker: the broker got a PUBACK for every message, so none is in flight to either source.
      const pubacks = () => clientIds.reduce((n, id) => n + acksLogged(mosquitto, id as string, 'PUBACK'), 0);
      await eventually(() => assert.ok(pubacks() >= total, `${pubacks()} of ${total} PUBACKs`), { timeoutMs: 20_000 });
      assert.equal([...seen.values()].filter((n) => n > 1).length, 0, 'a message went to both members of the group');
      assert.ok((counts[0] as number) > 0 && (counts[1] as number) > 0, `the stream was not split: ${counts.join(' / ')}`);
    } finally {
      for (const s of subscriptions) s.unsubscribe();
      await publisher.endAsync(true);
    }
  });
});

test('over TLS with a client certificate, the files named relative to the bridge file', async () => {
  const certs = tempDir();
  makeCertificates(certs, ['ferry']);
  const [tlsPort] = (await freePorts(1)) as [number];
  const secure = await startPrivateMosquitto(
    tempDir(),
    [
      `listener ${tlsPort} 127.0.0.1`,
      `cafile ${join(certs, 'ca.crt')}`,
      `certfile ${join(certs, 'server.crt')}`,
      `keyfile ${join(certs, 'server.key')}`,
      'require_certificate true',
    ].join('\n'),
  );
  const topic = randomName('ext/tls/');
  const received: Delivery[] = [];
  const tls = { ca: 'ca.crt', cert: 'ferry.crt', key: 'ferry.key' };
  const config = mqttClientSource.schema.parse({ url: `mqtts://127.0.0.1:${tlsPort}`, clientId: randomName('ferry-tls-'), topics: [topic], tls });
  // The bridge file lives in the certificate directory: its relative TLS paths resolve there, not in the working directory.
  const subscription = mqttClientSource.create(config, { ...ctx(), configDir: certs }).subscribe((d) => {
    received.push(d);
    d.ack();
  });
  const publisher = await connectAsync(secure.url, { reconnectPeriod: 0 });
  try {
    await eventually(() => assert.ok(secure.log().includes(`${topic}`), 'the source subscribed over TLS'), { timeoutMs: 20_000 });
    await publisher.publishAsync(topic, 'sealed', { qos: 1 });
    await eventually(() => assert.ok(received.length === 1, 'the message arrived'), { timeoutMs: 20_000 });
    assert.equal(Buffer.from((received[0] as Delivery).envelope.payload).toString(), 'sealed');
  } finally {
    subscription.unsubscribe();
    await publisher.endAsync(true);
    await secure.stop();
  }
});
