import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Observable, Subject, lastValueFrom, map, tap, toArray } from 'rxjs';
import { connectAsync, type MqttClient } from 'mqtt';
import pino from 'pino';
import type { Delivery } from '../../src/core/delivery.ts';
import { createDelivery } from '../../src/core/delivery.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import { mqttClientSink } from '../../src/mqtt/client-sink.ts';
import { toMqtt } from '../../src/lib/mqtt.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { sinkConformance } from '../conformance/sink-suite.ts';
import { eventually } from '../harness/eventually.ts';
import { freePorts } from '../harness/net.ts';
import { type PrivateMosquitto, startPrivateMosquitto } from '../harness/private-mosquitto.ts';
import { randomName } from '../harness/services.ts';
import { tcpProxy } from '../harness/tcp-proxy.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-mqtt-sink-');
let broker: PrivateMosquitto | undefined;
const privateBroker = async () => (broker ??= await startPrivateMosquitto(tempDir()));
before(privateBroker);
after(() => broker?.stop());

const ctx = () => ({ logger: pino({ level: 'silent' }), counters: new CounterRegistry(), dataDir: tempDir(), bridge: 'test' });

/** A subscriber (MQTT 5, so user properties show) collecting every message of `filter`. */
interface Received {
  readonly topic: string;
  readonly payload: string;
  readonly props: Record<string, unknown>;
}

async function collector(url: string, filter: string): Promise<{ client: MqttClient; messages: Received[] }> {
  const client = await connectAsync(url, { protocolVersion: 5, reconnectPeriod: 0 });
  const messages: Received[] = [];
  client.on('message', (topic, payload, packet) => {
    messages.push({ topic, payload: payload.toString(), props: { ...packet.properties?.userProperties } });
  });
  await client.subscribeAsync(filter, { qos: 1 });
  return { client, messages };
}

/**
 * A sink publishing to `url` under a fresh topic prefix, `${clientId}` as the last level, and
 * a subscriber reading it back. MQTT 3.1.1 carries no ids: the test notes each payload's
 * envelope id on its way in.
 */
async function destination(url: string, brokerUrl: string, protocolVersion: 4 | 5) {
  const prefix = randomName('ext/sink/');
  const { client, messages } = await collector(brokerUrl, `${prefix}/#`);
  const config = mqttClientSink.schema.parse({
    url,
    clientId: randomName('ferry-sink-'),
    protocolVersion,
    topic: `${prefix}/\${clientId}`,
    batchSize: 20,
    batchTimeMs: 2,
    connectTimeoutMs: 1000,
  });
  const idOf = new Map<string, string>();
  /** Ids the sink nacked last (a message sent again and written leaves it): readBack does not wait for them. */
  const nacked = new Set<string>();
  // Through the public entry point (ferry/mqtt), as a library user makes it.
  const sink = toMqtt(config, { name: 'test', logger: pino({ level: 'silent' }) });
  return {
    sink: (input: Observable<Delivery>) =>
      sink(
        input.pipe(
          tap((d) => idOf.set(Buffer.from(d.envelope.payload).toString(), d.envelope.id)),
          map((d) => createDelivery(d.envelope, { onAck: () => (nacked.delete(d.envelope.id), d.ack()), onNack: (error) => (nacked.add(d.envelope.id), d.nack(error)) })),
        ),
      ),
    // The broker forwards a message after acknowledging it: the subscriber gets it a moment later.
    readBack: async () => {
      const written = new Set([...idOf.values()].filter((id) => !nacked.has(id)));
      await eventually(() => assert.ok(messages.length >= written.size, `${messages.length} of ${written.size} messages read back`));
      return messages.map((m) => idOf.get(m.payload) ?? 'unknown');
    },
    cleanup: async () => {
      await client.endAsync(true);
    },
  };
}

for (const protocolVersion of [4, 5] as const) {
  sinkConformance(`mqttClient sink (Mosquitto, MQTT ${protocolVersion === 4 ? '3.1.1' : '5'})`, {
    batchSize: 20,
    working: async () => {
      const mosquitto = await privateBroker();
      return destination(mosquitto.url, mosquitto.url, protocolVersion);
    },
    failing: async () => {
      const [port] = (await freePorts(1)) as [number];
      const config = mqttClientSink.schema.parse({ url: `mqtt://127.0.0.1:${port}`, clientId: randomName('ferry-sink-'), protocolVersion, batchSize: 20, connectTimeoutMs: 1000 });
      return { sink: toMqtt(config, { name: 'test', logger: pino({ level: 'silent' }) }), cleanup: async () => {} };
    },
    unwritable: async () => {
      const mosquitto = await privateBroker();
      // Without a client id, `${clientId}` in the topic has no value: no retry can publish it.
      const poison = createEnvelope({ topic: 'devices/x/telemetry/t', payload: 'no client id', origin: { source: 'test' } });
      return { ...(await destination(mosquitto.url, mosquitto.url, protocolVersion)), poison };
    },
    flaky: async () => {
      const mosquitto = await privateBroker();
      // The broker is real; the path to it is down until recover().
      const proxy = await tcpProxy({ host: '127.0.0.1', port: mosquitto.port }, { refusing: true });
      const target = await destination(`mqtt://127.0.0.1:${proxy.port}`, mosquitto.url, protocolVersion);
      return {
        ...target,
        recover: () => proxy.forward(),
        cleanup: async () => {
          await target.cleanup();
          await proxy.close();
        },
      };
    },
  });
}

describe('mqttClient sink', () => {
  test('MQTT 5: headers become user properties with the envelope id as ferry-id; retain is kept', async () => {
    const mosquitto = await privateBroker();
    const topic = randomName('ext/props/');
    const { client, messages } = await collector(mosquitto.url, `${topic}/#`);
    const config = mqttClientSink.schema.parse({
      url: mosquitto.url,
      clientId: randomName('ferry-sink-'),
      protocolVersion: 5,
      topic: `${topic}/\${header.site}`,
      retain: true,
      messageExpiryIntervalSec: 60,
    });
    const envelope = createEnvelope({ topic: 'devices/d1/t', payload: 'x', headers: { site: 'north', trace: 't1' }, origin: { source: 'test' } });
    let acked = false;
    const input = new Subject<Delivery>();
    const done = lastValueFrom(mqttClientSink.create(config, ctx())(input).pipe(toArray()));
    input.next(createDelivery(envelope, { onAck: () => (acked = true), onNack: (e) => assert.fail(e) }));
    input.complete();
    await done;
    try {
      assert.equal(acked, true);
      await eventually(() => assert.equal(messages.length, 1));
      assert.equal(messages[0]?.topic, `${topic}/north`);
      assert.deepEqual(messages[0]?.props, { site: 'north', trace: 't1', 'ferry-id': envelope.id });
    } finally {
      await client.publishAsync(`${topic}/north`, '', { retain: true, qos: 1 });
      await client.endAsync(true);
    }
  });

  test('a message whose topic template has no value is rejected for good (dead-lettered), not retried', async () => {
    const mosquitto = await privateBroker();
    const config = mqttClientSink.schema.parse({ url: mosquitto.url, clientId: randomName('ferry-sink-'), topic: 'out/${header.missing}' });
    const errors: Error[] = [];
    const input = new Subject<Delivery>();
    const done = lastValueFrom(mqttClientSink.create(config, ctx())(input).pipe(toArray()));
    input.next(createDelivery(createEnvelope({ topic: 't', payload: 'x', origin: { source: 'test' } }), { onAck: () => assert.fail('acked'), onNack: (e) => errors.push(e) }));
    input.complete();
    await done;
    assert.equal(errors.length, 1);
    assert.match(String(errors[0]?.message), /no value/);
    assert.equal((errors[0] as { retryable?: boolean }).retryable, false);
  });

  test('config: wildcard captures and wildcard topics are refused with a reason', () => {
    const parse = (topic: string) => mqttClientSink.schema.safeParse({ url: 'mqtt://b:1883', clientId: 'c', topic });
    assert.match(String(parse('out/${1}').error?.issues[0]?.message), /not available in the mqttClient sink/);
    assert.match(String(parse('out/#').error?.issues[0]?.message), /wildcard/);
    assert.equal(parse('site/${clientId}/${topic}').success, true);
  });
});
