// Kafka answers a produce request partition by partition: a broker that leads some partitions
// of a request and no longer leads another appends the first and answers NOT_LEADER_OR_FOLLOWER
// for the other. kafkajs 2.2.4's response parse threw that error for the whole request, so the
// retry sent every partition of it again and the ones already appended were written twice
// (without idempotent: true; with it Kafka dropped them by their sequence numbers, and the request
// still goes again whole, see send-messages.ts). Here the producer's metadata still has one broker
// lead both partitions after one moved to the other broker, so that the first broker's answer
// mixes both.
// Before kafkajs loads: the producer's send is bound when kafkajs loads.
import '../harness/kafkajs-patched.ts';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Kafka, Partitioners, logLevel } from 'kafkajs';
import pino from 'pino';
import { type KafkaRecord, createKafkaProducer } from '../../src/kafka/client.ts';
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

function producer(idempotent: boolean) {
  return createKafkaProducer({
    brokers: cluster.brokers,
    clientId: randomName('ferry-send-mixed-'),
    acks: 'all',
    compression: 'none',
    idempotent,
    maxInFlightRequests: 1,
    connectionTimeoutMs: 3000,
    requestTimeoutMs: 10_000,
    retries: 3,
    logger: pino({ level: 'silent' }),
  });
}

const record = (key: string, value: string | Buffer): KafkaRecord => ({ key, value: Buffer.from(value), headers: {}, timestamp: Date.now() });

/** `count` keys that Ferry's (kafkajs' default, murmur2) partitioner puts in `partition` of `partitions`. */
function keysOf(partition: number, partitions: number, count: number): string[] {
  const partitioner = Partitioners.DefaultPartitioner();
  const partitionMetadata = Array.from({ length: partitions }, (_, partitionId) => ({ partitionId, leader: 1, partitionErrorCode: 0, replicas: [1], isr: [1] }));
  const keys: string[] = [];
  for (let i = 0; keys.length < count; i++) {
    const key = `device-${i}`;
    if (partitioner({ topic: 't', partitionMetadata, message: { key, value: null } }) === partition) keys.push(key);
  }
  return keys;
}

/** Every value in `topic`, with the number of times it is there. */
async function valuesIn(topic: string): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (const m of await readTopic(cluster.brokers, topic)) {
    const value = m.value?.toString() ?? '';
    counts.set(value, (counts.get(value) ?? 0) + 1);
  }
  return counts;
}

for (const idempotent of [false, true]) {
  test(`kafka producer${idempotent ? ' (idempotent)' : ''}: one broker's answer that writes a partition and fails another has each record written once`, async () => {
    const topic = randomName('ferry-send-mixed-');
    // Two partitions, both replicated on both nodes, both led by node 1.
    await cluster.createTopic(topic, [1, 1]);
    const kafka = producer(idempotent);
    const wave = (name: string) => [{ topic, records: [0, 1].flatMap((p) => keysOf(p, 2, 10).map((key, i) => record(key, `${name}-${p}-${i}`))) }];
    try {
      await kafka.connect();
      assert.deepEqual(await kafka.send(wave('before')), []);
      // The producer keeps the metadata it has (kafkajs refreshes it every 5 minutes, or on an
      // error): its next request goes to node 1 for both partitions, and node 1 appends
      // partition 0's records and answers NOT_LEADER_OR_FOLLOWER for partition 1's.
      await cluster.moveLeader(topic, 1, 2);
      assert.deepEqual(await kafka.send(wave('after')), []);
      // An idempotent producer's numbers go on from where each partition's are in Kafka: one
      // counted past a batch Kafka had not appended would have it refuse the retry as out of
      // order; one short of a batch appended, drop this wave's as a duplicate.
      assert.deepEqual(await kafka.send(wave('later')), []);
    } finally {
      await kafka.disconnect();
    }
    const counts = await valuesIn(topic);
    const expected = ['before', 'after', 'later'].flatMap((name) => [0, 1].flatMap((p) => Array.from({ length: 10 }, (_, i) => `${name}-${p}-${i}`)));
    assert.deepEqual(
      expected.filter((v) => !counts.has(v)),
      [],
      'every record is in Kafka',
    );
    assert.deepEqual(
      [...counts].filter(([, n]) => n > 1).map(([v]) => v),
      [],
      'no record is written twice',
    );
    assert.equal(counts.size, expected.length);
  });
}

test('kafka producer: an answer that writes a partition, refuses a record of another and fails a third keeps each apart', async () => {
  const topic = randomName('ferry-send-mixed-refused-');
  await cluster.createTopic(topic, [1, 1, 1]);
  const admin = new Kafka({ clientId: randomName('ferry-send-mixed-'), brokers: [...cluster.brokers], logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    await admin.alterConfigs({ validateOnly: false, resources: [{ type: 2, name: topic, configEntries: [{ name: 'max.message.bytes', value: '4096' }] }] });
  } finally {
    await admin.disconnect();
  }
  const kafka = producer(false);
  const [written, failed, refused] = [0, 1, 2].map((p) => keysOf(p, 3, 5)) as [string[], string[], string[]];
  const large = record(refused[0] as string, Buffer.alloc(8192, 'x'));
  let answer: Awaited<ReturnType<typeof kafka.send>>;
  try {
    await kafka.connect();
    assert.deepEqual(await kafka.send([{ topic, records: [0, 1, 2].map((p) => record(keysOf(p, 3, 1)[0] as string, `before-${p}`)) }]), []);
    // Node 1 (the leader of all three, as the producer has it) appends partition 0's records,
    // refuses partition 2's batch for its large record, and no longer leads partition 1.
    await cluster.moveLeader(topic, 1, 2);
    answer = await kafka.send([
      {
        topic,
        records: [
          ...written.map((key, i) => record(key, `written-${i}`)),
          ...failed.map((key, i) => record(key, `failed-${i}`)),
          large,
          ...refused.slice(1).map((key, i) => record(key, `refused-${i}`)),
        ],
      },
    ]);
  } finally {
    await kafka.disconnect();
  }
  // The refused partition's records come back, not written, the large one among them.
  assert.equal(answer.length, 1);
  assert.equal(answer[0]?.records.length, 5);
  assert.ok(answer[0]?.records.includes(large));
  const counts = await valuesIn(topic);
  assert.deepEqual(
    [...counts].sort(),
    [...[0, 1, 2].map((p) => `before-${p}`), ...written.map((_, i) => `written-${i}`), ...failed.map((_, i) => `failed-${i}`)].map((v) => [v, 1]).sort(),
    "the written and the failed partitions' records once each, none of the refused partition's",
  );
});
