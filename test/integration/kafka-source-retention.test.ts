// A group whose committed offset retention deleted (a gateway offline longer than the topic's
// retention) must read the records Kafka still has: kafkajs reset a consumer without
// `fromBeginning` to the end of the partition, and those commands were skipped, unread.
// Before kafkajs loads, as in `ferry run`: some of Ferry's replacements are bound at kafkajs' load.
import '../harness/kafkajs-patched.ts';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import { Kafka, logLevel } from 'kafkajs';
import { kafkaSource } from '../../src/kafka/source.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { eventually } from '../harness/eventually.ts';
import { randomName, requireService } from '../harness/services.ts';

test('kafka source: a committed offset retention deleted resumes at the earliest record Kafka has, not at the end', { timeout: 60_000 }, async (t) => {
  const brokers = await requireService('kafka');
  const topic = randomName('ferry-source-retention-');
  const groupId = `${topic}-group`;
  const kafka = new Kafka({ brokers, logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  t.after(() => admin.disconnect());
  await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
  const producer = kafka.producer();
  await producer.connect();
  await producer.send({ topic, messages: Array.from({ length: 10 }, (_, i) => ({ value: `command ${i}` })) });
  await producer.disconnect();
  // The group read up to 3; retention (here, a delete) then removed everything before 6.
  await admin.setOffsets({ groupId, topic, partitions: [{ partition: 0, offset: '3' }] });
  await admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: '6' }] });

  const source = kafkaSource.create(kafkaSource.schema.parse({ brokers, groupId, topics: [topic], fromBeginning: false }), {
    logger: pino({ level: 'silent' }),
    counters: new CounterRegistry(),
    dataDir: '/nonexistent',
    bridge: 'test',
  });
  const received: string[] = [];
  const subscription = source.subscribe((delivery) => {
    received.push(Buffer.from(delivery.envelope.payload).toString());
    delivery.ack();
  });
  t.after(() => subscription.unsubscribe());
  await eventually(() => assert.deepEqual(received, ['command 6', 'command 7', 'command 8', 'command 9']), { timeoutMs: 30_000 });
  await eventually(async () => {
    const [committed] = await admin.fetchOffsets({ groupId, topics: [topic] });
    assert.equal(committed?.partitions[0]?.offset, '10');
  });
});
