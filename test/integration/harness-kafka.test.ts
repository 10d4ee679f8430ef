// Before kafkajs loads, as in `ferry run`: some of Ferry's replacements are bound at kafkajs' load.
import '../harness/kafkajs-patched.ts';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Kafka, logLevel, type IHeaders } from 'kafkajs';
import { randomName, requireService } from '../harness/services.ts';

interface Received {
  key: string | undefined;
  value: string | undefined;
  headers: IHeaders;
  offset: string;
}

test('kafka: keyed messages with headers round-trip in order', { timeout: 60_000 }, async (t) => {
  const brokers = await requireService('kafka');
  const kafka = new Kafka({ clientId: randomName('ferry-test-'), brokers, logLevel: logLevel.NOTHING });
  const topic = randomName('ferry-harness-');
  const admin = kafka.admin();
  const producer = kafka.producer();
  const consumer = kafka.consumer({ groupId: randomName('ferry-harness-group-') });
  t.after(async () => {
    await consumer.disconnect();
    await producer.disconnect();
    await admin.deleteTopics({ topics: [topic] }).catch(() => {});
    await admin.disconnect();
  });

  await admin.connect();
  const created = await admin.createTopics({ topics: [{ topic, numPartitions: 1, replicationFactor: 1 }], waitForLeaders: true });
  assert.equal(created, true);

  await producer.connect();
  const sent = [1, 2, 3].map((i) => ({
    key: `device-${i}`,
    value: JSON.stringify({ seq: i }),
    headers: { 'ferry-seq': String(i), 'ferry-bin': Buffer.from([0, i, 0xff]) },
  }));
  await producer.send({ topic, acks: -1, messages: sent });

  const received: Received[] = [];
  let done!: () => void;
  let failed!: (err: Error) => void;
  const allReceived = new Promise<void>((resolve, reject) => {
    done = resolve;
    failed = reject;
  });
  // kafkajs restarts the consumer itself after retriable crashes; only a final one fails the test.
  consumer.on(consumer.events.CRASH, ({ payload }) => {
    if (!payload.restart) failed(payload.error);
  });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ message }) => {
      received.push({
        key: message.key?.toString(),
        value: message.value?.toString(),
        headers: message.headers ?? {},
        offset: message.offset,
      });
      if (received.length === sent.length) done();
    },
  });
  await allReceived;

  assert.deepEqual(
    received.map((m) => [m.offset, m.key, m.value]),
    sent.map((m, i) => [String(i), m.key, m.value]),
  );
  received.forEach((m, i) => {
    assert.deepEqual(m.headers['ferry-seq'], Buffer.from(String(i + 1)));
    assert.deepEqual(m.headers['ferry-bin'], Buffer.from([0, i + 1, 0xff]));
  });
});
