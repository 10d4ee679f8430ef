import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import { patchKafkajs } from '../../../src/kafka/kafkajs-patches.ts';
import { type TargetTopicsCluster, forgetIdleTopics, forgetting } from '../../../src/kafka/topic-metadata.ts';

const require = createRequire(import.meta.url);
type Metadata = { topicMetadata: { topic: string; partitionMetadata: unknown[] }[] } | null;
interface Pool {
  metadata: Metadata;
  metadataExpireAt: number | null;
  refreshMetadata(topics: string[]): Promise<void>;
}
type RefreshIfNecessary = (this: Pool, topics: string[]) => Promise<void>;
type FindPartitions = (this: { brokerPool: { metadata: Metadata } }, topic: string) => unknown[];
const BrokerPool = require('kafkajs/src/cluster/brokerPool.js') as { prototype: { refreshMetadataIfNecessary: RefreshIfNecessary } };
const Cluster = require('kafkajs/src/cluster/index.js') as { prototype: { findTopicPartitionMetadata: FindPartitions } };
// The originals, taken before the patch replaces them.
const originalRefresh = BrokerPool.prototype.refreshMetadataIfNecessary;
const originalFind = Cluster.prototype.findTopicPartitionMetadata;
patchKafkajs();
const patchedRefresh = BrokerPool.prototype.refreshMetadataIfNecessary;
const patchedFind = Cluster.prototype.findTopicPartitionMetadata;

const metadataOf = (topics: readonly string[]): NonNullable<Metadata> => ({
  topicMetadata: topics.map((topic, i) => ({ topic, partitionMetadata: [{ partitionId: 0, leader: i }] })),
});

/** A broker pool whose refreshes are counted, not sent. */
function pool(metadata: Metadata, expireAt: number | null): Pool & { refreshes: string[][] } {
  const refreshes: string[][] = [];
  return {
    metadata,
    metadataExpireAt: expireAt,
    refreshes,
    refreshMetadata: async (topics) => void refreshes.push(topics),
  };
}

test('metadata is refreshed before a send exactly when kafkajs refreshes it', async () => {
  const known = metadataOf(['a', 'b', 'b', 'c']);
  const cases: [Metadata, number | null, string[]][] = [
    [null, null, ['a']],
    [known, null, ['a']],
    [known, Date.now() - 1, ['a']],
    [known, Date.now() + 60_000, ['a', 'b', 'c']],
    [known, Date.now() + 60_000, []],
    [known, Date.now() + 60_000, ['a', 'd']],
    [metadataOf([]), Date.now() + 60_000, ['a']],
  ];
  for (const [metadata, expireAt, topics] of cases) {
    const original = pool(metadata, expireAt);
    const patched = pool(metadata, expireAt);
    await originalRefresh.call(original, topics);
    await patchedRefresh.call(patched, topics);
    assert.deepEqual(patched.refreshes, original.refreshes, `${JSON.stringify(metadata?.topicMetadata.map((t) => t.topic))} expiring ${expireAt}, for ${topics.join(',')}`);
  }
});

test("a topic's partitions are found as kafkajs finds them, and no metadata fails as it fails", () => {
  const metadata = { topicMetadata: [...metadataOf(['a', 'b']).topicMetadata, { topic: 'a', partitionMetadata: [{ partitionId: 9 }] }] };
  for (const topic of ['a', 'b', 'missing']) {
    const cluster = { brokerPool: { metadata } };
    assert.deepEqual(patchedFind.call(cluster, topic), originalFind.call(cluster, topic));
    if (topic !== 'missing') assert.equal(patchedFind.call(cluster, topic), originalFind.call(cluster, topic), 'the same array, not a copy');
  }
  const empty = { brokerPool: { metadata: null } };
  assert.throws(
    () => patchedFind.call(empty, 'a'),
    (error: Error) => error.name === 'KafkaJSTopicMetadataNotLoaded',
  );
});

test('with thousands of topics known, a send looks each up once rather than through all of the metadata', async () => {
  const topics = Array.from({ length: 5000 }, (_, i) => `telemetry.dev-${i}`);
  const metadata = metadataOf(topics);
  let reads = 0;
  // Counts the entries kafkajs reads of the cached metadata (kafkajs compared every topic it
  // knows with the entries before its own: 12.5 million reads here for one send).
  const counted = new Proxy(metadata.topicMetadata, {
    get(target, property, receiver) {
      if (typeof property === 'string' && /^\d+$/.test(property)) reads += 1;
      return Reflect.get(target, property, receiver);
    },
  });
  const cached = { topicMetadata: counted };
  const sends = 3;
  for (let i = 0; i < sends; i++) {
    const p = pool(cached, Date.now() + 60_000);
    await patchedRefresh.call(p, topics);
    assert.deepEqual(p.refreshes, []);
    for (const topic of topics.slice(0, 100)) assert.equal(patchedFind.call({ brokerPool: { metadata: cached } }, topic).length, 1);
  }
  assert.ok(reads <= topics.length, `${reads} reads of ${topics.length} entries over ${sends} sends`);
});

const Lock = require('kafkajs/src/utils/lock.js') as new (options: { timeout: number }) => TargetTopicsCluster['mutatingTargetTopics'];

/** A cluster as forgetting() uses kafkajs' (with kafkajs' lock), its metadata refreshes counted, not sent. */
function cluster(refuse?: string): TargetTopicsCluster & { refreshed: string[][] } {
  const c: TargetTopicsCluster & { refreshed: string[][] } = {
    targetTopics: new Set(),
    refreshed: [],
    mutatingTargetTopics: new Lock({ timeout: 5000 }),
    brokerPool: { metadata: null },
    refreshMetadata: async () => {
      c.refreshed.push([...c.targetTopics]);
      if (refuse !== undefined && c.targetTopics.has(refuse)) throw Object.assign(new Error('refused'), { type: 'UNKNOWN_TOPIC_OR_PARTITION' });
      (c.brokerPool as { metadata: unknown }).metadata = {};
    },
    addMultipleTargetTopics: async () => {},
  };
  return c;
}

test('a producer forgets the topics it has not written for idleMs, and refreshes metadata only for a new topic', async () => {
  let now = 0;
  const c = cluster();
  forgetting(c, 1000, () => now);
  await c.addMultipleTargetTopics(['a', 'b']);
  now = 600;
  await c.addMultipleTargetTopics(['b']);
  assert.deepEqual(c.refreshed, [['a', 'b']], 'no refresh for topics it has');
  now = 1200;
  await c.addMultipleTargetTopics(['c']);
  assert.deepEqual([...c.targetTopics].sort(), ['b', 'c'], "'a', idle for 1200 ms, is forgotten");
  assert.deepEqual(c.refreshed.at(-1)?.sort(), ['b', 'c']);
  now = 5000;
  await Promise.all([c.addMultipleTargetTopics(['a']), c.addMultipleTargetTopics(['d'])]);
  assert.deepEqual([...c.targetTopics].sort(), ['a', 'd']);
});

test('a topic Kafka refuses is taken back, as kafkajs takes it back, and the others stay', async () => {
  const c = cluster('bad');
  forgetting(c, 1000, () => 0);
  await c.addMultipleTargetTopics(['a']);
  await assert.rejects(c.addMultipleTargetTopics(['bad', 'b']), { type: 'UNKNOWN_TOPIC_OR_PARTITION' });
  assert.deepEqual([...c.targetTopics], ['a']);
});

test("only the producers of a kafkajs client forget topics: its consumers' and admins' topics are subscriptions", async () => {
  const { Kafka } = await import('kafkajs');
  const kafka = new Kafka({ brokers: ['127.0.0.1:1'], logLevel: 0 });
  assert.equal(forgetIdleTopics(kafka, 1000), true, "kafkajs' cluster factory is where Ferry looks for it");
  const clusters: TargetTopicsCluster[] = [];
  const key = Object.getOwnPropertySymbols(kafka).find((s) => s.description === 'private:Kafka:createCluster') as symbol;
  const create = (kafka as unknown as Record<symbol, (options: unknown) => TargetTopicsCluster>)[key] as (options: unknown) => TargetTopicsCluster;
  (kafka as unknown as Record<symbol, unknown>)[key] = (options: unknown) => {
    const made = create(options);
    clusters.push(made);
    return made;
  };
  kafka.producer();
  kafka.consumer({ groupId: 'g' });
  kafka.admin();
  const [producer, consumer, admin] = clusters as [TargetTopicsCluster, TargetTopicsCluster, TargetTopicsCluster];
  assert.ok(Object.hasOwn(producer, 'addMultipleTargetTopics'), "the producer's cluster forgets");
  // What forgetting() uses of kafkajs' cluster: changed by an upgrade, every send would fail.
  assert.ok(producer.targetTopics instanceof Set, 'targetTopics is a Set');
  assert.equal(typeof producer.mutatingTargetTopics.acquire, 'function');
  assert.equal(typeof producer.mutatingTargetTopics.release, 'function');
  assert.ok('metadata' in producer.brokerPool, 'the broker pool keeps the metadata');
  assert.equal(typeof producer.refreshMetadata, 'function');
  assert.ok(!Object.hasOwn(consumer, 'addMultipleTargetTopics') && !Object.hasOwn(admin, 'addMultipleTargetTopics'), "the consumer's and admin's do not");
});
