// An idempotent producer retries a failed request's records under the sequence numbers they went
// with, and Kafka drops a batch it already appended by those numbers alone (the producer id, the
// first and the last sequence number). A retry must therefore send each partition the same
// records it sent before: a partitioner that deals records round robin or at random (kafkajs'
// DefaultPartitioner for records without a key) would deal them differently on a retry, and
// Kafka would drop, as a duplicate, a batch of other records under the numbers of one it had
// appended. Here a request's first partition is appended and its second refused (its leader moved
// while the producer still had the old metadata), and the partitioner deals differently after.
// Before kafkajs loads: the producer's send is bound when kafkajs loads.
import '../harness/kafkajs-patched.ts';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Kafka, logLevel, type Message, type PartitionerArgs, type ProducerConfig } from 'kafkajs';
import { startKafkaCluster } from '../harness/kafka-cluster.ts';
import { readTopic } from '../harness/kafka-read.ts';
import { randomName } from '../harness/services.ts';

let cluster: Awaited<ReturnType<typeof startKafkaCluster>>;

before(async () => {
  cluster = await startKafkaCluster(2);
});

after(async () => {
  await cluster?.stop();
});

/** Two partitions, both replicated on both nodes, led by the nodes given. */
async function topicLedBy(leaders: readonly [number, number]): Promise<string> {
  const topic = randomName('ferry-retry-partition-');
  await cluster.createTopic(topic, leaders);
  return topic;
}

/**
 * Writes a record to each partition of `topic` through a producer of `config`, moves partition
 * 1's leader to `nodeId` and sends `messages`; resolves to the values in the topic, sorted. The
 * producer keeps the metadata it has (kafkajs refreshes it every 5 minutes, or on an error): the
 * send after the move goes to partition 1's old leader first.
 */
async function sendAfterLeaderMoved(topic: string, config: ProducerConfig, nodeId: number, messages: Message[]): Promise<string[]> {
  const kafka = new Kafka({ clientId: randomName('ferry-retry-partition-'), brokers: [...cluster.brokers], logLevel: logLevel.NOTHING, retry: { retries: 3 } });
  const producer = kafka.producer({ maxInFlightRequests: 1, ...config });
  await producer.connect();
  try {
    await producer.send({
      topic,
      acks: -1,
      messages: [
        { partition: 0, value: 'before-0' },
        { partition: 1, value: 'before-1' },
      ],
    });
    await cluster.moveLeader(topic, 1, nodeId);
    await producer.send({ topic, acks: -1, messages });
  } finally {
    await producer.disconnect();
  }
  return (await readTopic(cluster.brokers, topic)).map((m) => m.value?.toString() ?? '').sort();
}

/** A partitioner (kafkajs' createPartitioner) that deals records without a partition `dealt`'s partitions in turn. */
function dealing(dealt: readonly number[]) {
  let calls = 0;
  return () => (args: PartitionerArgs) => args.message.partition ?? (dealt[calls++ % dealt.length] as number);
}

test('an idempotent producer sends a failed partition the same records on a retry, however its partitioner deals them', async () => {
  const topic = await topicLedBy([1, 1]);
  // Dealt 0, 0, 1 on the first attempt, 1, 0, 0 on a retry of the same three.
  const createPartitioner = dealing([0, 0, 1, 1, 0, 0]);
  const values = await sendAfterLeaderMoved(
    topic,
    { idempotent: true, createPartitioner },
    2,
    ['after-0', 'after-1', 'after-2'].map((value) => ({ value })),
  );
  assert.deepEqual(values, ['after-0', 'after-1', 'after-2', 'before-0', 'before-1'], 'every record written once');
});

test('a message object sent twice is written twice when one of its partitions fails and the other is written', async () => {
  const topic = await topicLedBy([1, 2]);
  // Partition 1's leader (node 2, as the producer has it) answers NOT_LEADER_OR_FOLLOWER; node 1 writes partition 0.
  const twice = { value: 'twice' };
  const values = await sendAfterLeaderMoved(topic, { createPartitioner: dealing([0, 1]) }, 1, [twice, twice]);
  assert.deepEqual(values, ['before-0', 'before-1', 'twice', 'twice']);
});
