// A Kafka source unsubscribed while its consumer is still connecting does not join its group
// afterwards (found by the source conformance suite: the consumer held its partitions with
// nobody to ack them, and the process did not exit).
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import pino from 'pino';
import { kafkaSource } from '../../src/kafka/source.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { kafkaTestClient } from '../harness/kafka-group.ts';
import { randomName, requireService } from '../harness/services.ts';

test('a Kafka source unsubscribed while it connects never joins its consumer group', async () => {
  const brokers = await requireService('kafka');
  const kafka = await kafkaTestClient(brokers);
  try {
    const topic = randomName('ferry-it-stop-');
    const group = randomName('ferry-it-stop-group-');
    await kafka.createTopic(topic);
    const config = kafkaSource.schema.parse({ brokers, groupId: group, topics: [topic], fromBeginning: true });
    const afterStop: Promise<void>[] = [];
    const source = kafkaSource.create(config, {
      logger: pino({ level: 'silent' }),
      counters: new CounterRegistry(),
      dataDir: '/nonexistent',
      bridge: 'it',
      afterStop: (w) => void afterStop.push(w),
    });
    source.subscribe(() => {}).unsubscribe(); // before connect() can have finished
    await Promise.all(afterStop);
    // Long enough for a consumer that went on to connect, join and be assigned the partition.
    await sleep(5000);
    assert.ok(['Empty', 'Dead', 'Unknown'].includes(await kafka.groupState(group)), `group state ${await kafka.groupState(group)}`);
  } finally {
    await kafka.close();
  }
});
