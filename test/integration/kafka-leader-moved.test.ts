// kafkajs issue 1303: kafkajs 2.2.4 kept, across the attempts of one send, each broker's answer,
// and on a retry sent only to the brokers without one. When a partition's leader had moved to a
// broker that answered for its other partitions (a leader election, a rolling restart), the
// partition's records were not sent again and the send resolved as if they were written: the
// sink acknowledged them and the buffer dropped them. Here the producer's metadata still names
// the old leader, which answers NOT_LEADER_OR_FOLLOWER, and the retry finds the new leader among
// the brokers that answered.
// Before kafkajs loads: the producer's send is bound when kafkajs loads.
import '../harness/kafkajs-patched.ts';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import pino from 'pino';
import { createKafkaProducer } from '../../src/kafka/client.ts';
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

for (const idempotent of [true, false]) {
  test(`kafka producer${idempotent ? ' (idempotent)' : ''}: a partition whose leader moved to a broker that answered for another partition is sent again to it`, async () => {
    const topic = randomName('ferry-leader-moved-');
    // Two partitions, both replicated on both nodes: partition 0 led by node 1, partition 1 by node 2.
    await cluster.createTopic(topic, [1, 2]);
    const producer = createKafkaProducer({
      brokers: cluster.brokers,
      clientId: randomName('ferry-leader-moved-'),
      acks: 'all',
      compression: 'none',
      idempotent,
      maxInFlightRequests: 1,
      connectionTimeoutMs: 3000,
      requestTimeoutMs: 10_000,
      retries: 3,
      logger: pino({ level: 'silent' }),
    });
    // Keys spread over both partitions (murmur2 of the key).
    const batch = (wave: string) => ({
      topic,
      records: Array.from({ length: 20 }, (_, i) => ({ key: `device-${i}`, value: Buffer.from(`${wave}-${i}`), headers: {}, timestamp: Date.now() })),
    });
    try {
      await producer.connect();
      assert.deepEqual(await producer.send([batch('before')]), []);
      // The producer keeps the metadata it has (kafkajs refreshes it every 5 minutes, or on an error).
      await cluster.moveLeader(topic, 1, 1);
      assert.deepEqual(await producer.send([batch('after')]), []);
    } finally {
      await producer.disconnect();
    }
    const written = await readTopic(cluster.brokers, topic);
    const values = written.map((m) => m.value?.toString() ?? '');
    assert.deepEqual(new Set(written.map((m) => m.partition)), new Set([0, 1]), 'records of both partitions');
    for (const wave of ['before', 'after']) {
      const expected = Array.from({ length: 20 }, (_, i) => `${wave}-${i}`);
      assert.deepEqual(
        expected.filter((v) => !values.includes(v)),
        [],
        `every record sent ${wave} the leader moved is in Kafka`,
      );
    }
    assert.equal(values.length, 40, 'each record written once');
  });
}
