import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Subject, lastValueFrom, toArray } from 'rxjs';
import pino from 'pino';
import type { Delivery } from '../../src/core/delivery.ts';
import { kafkaSink } from '../../src/kafka/sink.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { sinkConformance } from '../conformance/sink-suite.ts';
import { trackedDeliveries } from '../conformance/deliveries.ts';
import { readTopic } from '../harness/kafka-read.ts';
import { randomName, requireService } from '../harness/services.ts';

const ctx = { logger: pino({ level: 'silent' }), counters: new CounterRegistry(), dataDir: '/nonexistent', bridge: 'test' };

function sinkFor(brokers: string[], topic: string, extra: Record<string, unknown> = {}) {
  return kafkaSink.create(kafkaSink.schema.parse({ brokers, topic, batchSize: 40, batchTimeMs: 5, ...extra }), ctx);
}

sinkConformance('kafka', {
  batchSize: 40,
  working: async () => {
    const brokers = await requireService('kafka');
    const topic = randomName('ferry-sink-');
    return {
      sink: sinkFor(brokers, topic),
      readBack: async () => (await readTopic(brokers, topic)).map((m) => m.headers['ferry-id'] ?? ''),
      cleanup: async () => {},
    };
  },
  failing: async () => ({
    // Nothing listens on port 1 of loopback: connecting is refused at once.
    sink: sinkFor(['127.0.0.1:1'], 'ferry-unreachable', { retries: 0, connectionTimeoutMs: 500 }),
    cleanup: async () => {},
  }),
});

test('kafka sink: key is the client id; envelope id and MQTT topic travel as headers; bytes intact', async () => {
  const brokers = await requireService('kafka');
  const topic = randomName('ferry-sink-headers-');
  const tracked = trackedDeliveries(3, 'devices/sensor-9/telemetry/climate', 'sensor-9');
  const input = new Subject<Delivery>();
  const done = lastValueFrom(sinkFor(brokers, topic)(input).pipe(toArray()));
  for (const d of tracked.deliveries) input.next(d);
  input.complete();
  await done;
  assert.equal(tracked.acked.length, 3);
  const messages = await readTopic(brokers, topic);
  assert.deepEqual(
    messages.map((m) => [m.key, m.headers['ferry-id'], m.headers['mqtt-topic'], m.value?.toString()]),
    tracked.deliveries.map((d) => ['sensor-9', d.envelope.id, 'devices/sensor-9/telemetry/climate', Buffer.from(d.envelope.payload).toString()]),
  );
});
