// MQTT 5 request/response through an external broker: the mqttClient source keeps a message's
// Response Topic and Correlation Data as headers, the sink sends those headers back as the real
// properties, and a header a broker may close the connection for is left out of the PUBLISH.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Subject, lastValueFrom, toArray } from 'rxjs';
import { connectAsync, type IPublishPacket } from 'mqtt';
import pino from 'pino';
import { type Delivery, createDelivery } from '../../src/core/delivery.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import { mqttClientSink } from '../../src/mqtt/client-sink.ts';
import { mqttClientSource } from '../../src/mqtt/client-source.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { eventually } from '../harness/eventually.ts';
import { type PrivateMosquitto, startPrivateMosquitto } from '../harness/private-mosquitto.ts';
import { randomName } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-mqtt-properties-');
let broker: PrivateMosquitto | undefined;
before(async () => {
  broker = await startPrivateMosquitto(tempDir());
});
after(() => broker?.stop());

test('the source keeps Response Topic and Correlation Data as headers', { timeout: 60_000 }, async () => {
  const mosquitto = broker as PrivateMosquitto;
  const topic = randomName('ext/request/');
  const config = mqttClientSource.schema.parse({ url: mosquitto.url, clientId: randomName('ferry-src-'), topics: [`${topic}/#`], protocolVersion: 5 });
  const received: Delivery[] = [];
  const ctx = { logger: pino({ level: 'silent' }), counters: new CounterRegistry(), dataDir: tempDir(), bridge: 'test' };
  const subscription = mqttClientSource.create(config, ctx).subscribe((d) => {
    received.push(d);
    d.ack();
  });
  const publisher = await connectAsync(mosquitto.url, { protocolVersion: 5, reconnectPeriod: 0 });
  try {
    await eventually(() => assert.ok(mosquitto.log().includes(`${topic}/#`), 'the source subscribed'), { timeoutMs: 20_000 });
    const properties = { responseTopic: `${topic}/reply`, correlationData: Buffer.from([0, 1, 254]), contentType: 'application/json', userProperties: { site: 'n' } };
    await publisher.publishAsync(`${topic}/a`, '{}', { qos: 1, properties });
    await eventually(() => assert.equal(received.length, 1), { timeoutMs: 20_000 });
    assert.deepEqual(received[0]?.envelope.headers, {
      site: 'n',
      'content-type': 'application/json',
      'response-topic': `${topic}/reply`,
      'correlation-data': Buffer.from([0, 1, 254]).toString('base64'),
    });
  } finally {
    subscription.unsubscribe();
    await publisher.endAsync(true);
  }
});

test('the sink sends response-topic and correlation-data as properties and leaves out a header with NUL', { timeout: 60_000 }, async () => {
  const mosquitto = broker as PrivateMosquitto;
  const topic = randomName('ext/reply/');
  const subscriber = await connectAsync(mosquitto.url, { protocolVersion: 5, reconnectPeriod: 0 });
  const packets: IPublishPacket[] = [];
  subscriber.on('message', (_topic, _payload, packet) => packets.push(packet));
  await subscriber.subscribeAsync(topic, { qos: 1 });
  const counters = new CounterRegistry();
  const config = mqttClientSink.schema.parse({ url: mosquitto.url, clientId: randomName('ferry-sink-'), protocolVersion: 5, topic });
  const headers = { 'response-topic': 'devices/d1/reply', 'correlation-data': Buffer.from('req-7').toString('base64'), site: 'n', binary: 'a\u0000b' };
  const envelope = createEnvelope({ topic: 't', payload: 'x', headers, origin: { source: 'test' } });
  let acked = false;
  const input = new Subject<Delivery>();
  const done = lastValueFrom(
    mqttClientSink
      .create(config, { logger: pino({ level: 'silent' }), counters, dataDir: tempDir(), bridge: 'b' })(input)
      .pipe(toArray()),
  );
  input.next(createDelivery(envelope, { onAck: () => (acked = true), onNack: (e) => assert.fail(e) }));
  input.complete();
  await done;
  try {
    assert.equal(acked, true);
    await eventually(() => assert.equal(packets.length, 1), { timeoutMs: 20_000 });
    const properties = packets[0]?.properties;
    assert.equal(properties?.responseTopic, 'devices/d1/reply');
    assert.equal(Buffer.from(properties?.correlationData ?? []).toString(), 'req-7');
    assert.deepEqual({ ...properties?.userProperties }, { site: 'n', 'ferry-id': envelope.id });
    assert.equal(counters.get('mqtt.client.headers_dropped{bridge=b}'), 1);
  } finally {
    await subscriber.endAsync(true);
  }
});
