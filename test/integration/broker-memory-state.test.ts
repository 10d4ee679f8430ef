// The embedded broker with `mqtt.persistence: memory` (aedes' own persistence) under the patched
// aedes that sets the publisher's id on a retained packet for the SQLite persistence's limits:
// retained messages and the subscription limit work there too. Real aedes, mqtt.js on loopback.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { type MqttClient, connectAsync } from 'mqtt';
import pino from 'pino';
import { EmbeddedBroker } from '../../src/mqtt/embedded-broker.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { eventually } from '../harness/eventually.ts';

const clients: MqttClient[] = [];
let broker: EmbeddedBroker | undefined;
after(async () => {
  for (const c of clients) c.end(true);
  await broker?.close();
});

test('in memory: a retained message is kept and sent to a later subscriber; the subscription limit refuses with SUBACK 0x80', async () => {
  const counters = new CounterRegistry();
  broker = await EmbeddedBroker.start({
    host: '127.0.0.1',
    port: 0,
    logger: pino({ level: 'silent' }),
    counters,
    limits: {
      subscriptionsPerClient: 1,
      retainedPerClient: 1,
      retainedBytesPerClient: 100,
      retainedMessages: 1,
      retainedBytes: 100,
      queuedPerSession: 1,
      queuedBytesPerSession: 100,
      sessionExpirySeconds: 60,
    },
  });
  const url = `mqtt://127.0.0.1:${broker.port}`;
  const publisher = await connectAsync(url, { clientId: 'pub', reconnectPeriod: 0 });
  clients.push(publisher);
  await publisher.publishAsync('site/door', 'closed', { qos: 1, retain: true });
  const reader = await connectAsync(url, { clientId: 'reader', reconnectPeriod: 0 });
  clients.push(reader);
  const seen: string[] = [];
  reader.on('message', (topic, payload, packet) => seen.push(`${topic} ${payload.toString()} ${packet.retain}`));
  await reader.subscribeAsync('site/#', { qos: 1 });
  await eventually(() => assert.deepEqual(seen, ['site/door closed true']));
  await assert.rejects(reader.subscribeAsync('other/#', { qos: 1 }), (error: { packet?: { granted?: number[] } }) => {
    assert.deepEqual(error.packet?.granted, [128]);
    return true;
  });
  assert.deepEqual(counters.families().get('mqtt.state.refused'), [{ labels: { limit: 'subscriptionsPerClient' }, value: 1 }]);
});
