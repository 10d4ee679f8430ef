// A scripted cluster and brokers: a request that fails before it is sent (its broker's lock
// timed out, adding its partitions to a transaction failed) next to one that failed on its way
// to Kafka cannot be timed with real brokers.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import { RETRIED_PER_PARTITION, SOURCE_RECORD, returningRecordRefusals } from '../../../src/kafka/produce-refusals.ts';
import { type SendCluster, type SendEosManager, type SendMessagesDeps, sendMessages } from '../../../src/kafka/send-messages.ts';

const require = createRequire(import.meta.url);
const deps: SendMessagesDeps = {
  KafkaJSMetadataNotLoaded: (require('kafkajs/src/errors.js') as Pick<SendMessagesDeps, 'KafkaJSMetadataNotLoaded'>).KafkaJSMetadataNotLoaded,
  staleMetadata: (require('kafkajs/src/protocol/error.js') as Pick<SendMessagesDeps, 'staleMetadata'>).staleMetadata,
};

interface Sent {
  readonly nodeId: number;
  readonly partitions: { partition: number; firstSequence: number | undefined; messages: string[] }[];
}
type Script = (nodeId: number, attempt: number) => 'answer' | 'fail' | 'lockFails' | 'leavesOut' | 'failsFirst';
const { createErrorFromCode } = require('kafkajs/src/protocol/error.js') as { createErrorFromCode(code: number): Error };
/** Kafka's NOT_LEADER_OR_FOLLOWER. */
const NOT_LEADER = 6;

/**
 * Two brokers, partition 0 led by broker 0 and partition 1 by broker 1, each doing what `script`
 * says at each attempt; the producer numbers its batches when `idempotent`.
 */
function scripted(
  script: Script,
  partitionMetadata = [
    { partitionId: 0, leader: 0 },
    { partitionId: 1, leader: 1 },
  ],
  idempotent = true,
) {
  const sent: Sent[] = [];
  let refreshes = 0;
  const sequences = new Map<number, number>();
  let attempt = 0;
  const broker = (nodeId: number) => ({
    nodeId,
    produce: async ({ topicData }: { topicData: { topic: string; partitions: { partition: number; firstSequence?: number; messages: { value: string }[] }[] }[] }) => {
      sent.push({
        nodeId,
        partitions: topicData.flatMap((t) => t.partitions.map((p) => ({ partition: p.partition, firstSequence: p.firstSequence, messages: p.messages.map((m) => m.value) }))),
      });
      if (script(nodeId, attempt) === 'fail') throw Object.assign(new Error('Connection error'), { name: 'KafkaJSConnectionError', retriable: true });
      const leftOut = script(nodeId, attempt) === 'leavesOut' ? 1 : 0;
      // The first partition of each topic failed: thrown for the request as kafkajs' parse does,
      // or handed on as produce-refusals.ts does for the requests marked for it.
      const failsFirst = script(nodeId, attempt) === 'failsFirst';
      if (failsFirst && !RETRIED_PER_PARTITION.has(topicData)) throw createErrorFromCode(NOT_LEADER);
      const answer = (partition: number, i: number) =>
        failsFirst && i === 0 ? { partition, errorCode: NOT_LEADER, retriableError: createErrorFromCode(NOT_LEADER) } : { partition, errorCode: 0 };
      return { topics: topicData.map((t) => ({ topicName: t.topic, partitions: t.partitions.slice(leftOut).map((p, i) => answer(p.partition, i)) })) };
    },
  });
  const brokers = [broker(0), broker(1)];
  const cluster: SendCluster = {
    targetTopics: new Set(['t', 'u']),
    refreshMetadataIfNecessary: async () => {},
    refreshMetadata: async () => void refreshes++,
    findTopicPartitionMetadata: () => partitionMetadata,
    findLeaderForPartitions: (_topic, partitions) => {
      const led: Record<string, number[]> = {};
      for (const id of partitions) {
        const leader = partitionMetadata.find((p) => p.partitionId === Number(id))?.leader;
        if (leader !== undefined) (led[leader] ??= []).push(Number(id));
      }
      return led;
    },
    findBroker: async ({ nodeId }) => brokers[Number(nodeId)] as (typeof brokers)[number],
    addMultipleTargetTopics: async () => {},
    removeBroker: () => {},
    isConnected: () => true,
    connect: async () => {},
  };
  const eosManager: SendEosManager = {
    isTransactional: () => false,
    getTransactionalId: () => undefined,
    getProducerId: () => 7,
    getProducerEpoch: () => 0,
    // As kafkajs' eosManager: no numbers without a producer id.
    isInitialized: () => idempotent,
    getSequence: (_topic, partition) => (idempotent ? (sequences.get(partition) ?? 0) : 0),
    updateSequence: (_topic, partition, increment) => void (idempotent && sequences.set(partition, (sequences.get(partition) ?? 0) + increment)),
    addPartitionsToTransaction: async () => {},
    acquireBrokerLock: async ({ nodeId }) => {
      if (script(nodeId, attempt) === 'lockFails') throw Object.assign(new Error('Timeout while acquiring lock'), { name: 'KafkaJSLockTimeout', retriable: true });
    },
    releaseBrokerLock: () => {},
  };
  /** kafkajs' retrier, without its waits: up to 5 retries, none after `bail`. */
  const retrier = async <T>(fn: (bail: (error: Error) => void, retryCount: number, retryTime: number) => Promise<T>): Promise<T> => {
    for (; ; attempt++) {
      let bailed: Error | undefined;
      try {
        const result = await fn((error) => void (bailed = error), attempt, 0);
        if (bailed !== undefined) throw bailed;
        return result;
      } catch (error) {
        if (bailed !== undefined || attempt >= 5) throw error;
      }
    }
  };
  let dealt = 0;
  /** Deals messages to the partitions in turn, as kafkajs' partitioner does messages without a key. */
  const partitioner = () => dealt++ % partitionMetadata.length;
  const logger = { debug: () => {}, error: () => {} };
  const send = sendMessages(deps)({ logger, cluster, partitioner, eosManager, retrier });
  return { send, sent, refreshes: () => refreshes };
}

test("a partition whose request failed is sent the same records again, also when another broker's request failed before it was sent", async () => {
  // Broker 0's request fails on its way (it may have reached Kafka); broker 1's lock times out, its request unsent.
  const { send, sent } = scripted((nodeId, attempt) => (attempt > 0 ? 'answer' : nodeId === 0 ? 'fail' : 'lockFails'));
  const messages = ['a', 'b', 'c', 'd'].map((value) => ({ value }));
  const results = await send({ acks: -1, topicMessages: [{ topic: 't', messages }] });
  const toPartition0 = sent.flatMap((request) => request.partitions.filter((p) => p.partition === 0));
  assert.deepEqual(toPartition0, [
    { partition: 0, firstSequence: 0, messages: ['a', 'c'] },
    { partition: 0, firstSequence: 0, messages: ['a', 'c'] },
  ]);
  const written = sent.slice(-2).flatMap((request) => request.partitions.flatMap((p) => p.messages));
  assert.deepEqual(written.sort(), ['a', 'b', 'c', 'd']);
  assert.deepEqual(results.map((r) => (r as { partition: number }).partition).sort(), [0, 1]);
});

test('a partition left out of an answer is sent again, the same records under the same sequence numbers, once', async () => {
  // Broker 0 leads both partitions and leaves the first of each topic out of its first answer.
  const { send, sent } = scripted(
    (_nodeId, attempt) => (attempt === 0 ? 'leavesOut' : 'answer'),
    [
      { partitionId: 0, leader: 0 },
      { partitionId: 1, leader: 0 },
    ],
  );
  const results = await send({
    acks: -1,
    topicMessages: [
      { topic: 't', messages: [{ value: 'a' }, { value: 'b' }] },
      { topic: 'u', messages: [] },
      { topic: 't', messages: [{ value: 'c' }] },
    ],
  });
  assert.deepEqual(sent, [
    {
      nodeId: 0,
      partitions: [
        { partition: 0, firstSequence: 0, messages: ['a', 'c'] },
        { partition: 1, firstSequence: 0, messages: ['b'] },
      ],
    },
    { nodeId: 0, partitions: [{ partition: 0, firstSequence: 0, messages: ['a', 'c'] }] },
  ]);
  assert.deepEqual(
    results.map((r) => (r as { partition: number }).partition),
    [1, 0],
  );
});

test('a partition that left the metadata after its request failed fails the send once retries run out', async () => {
  const metadata = [
    { partitionId: 0, leader: 0 },
    { partitionId: 1, leader: 1 },
  ];
  // Broker 1's request fails, and partition 1 is gone from the metadata after (its topic made again with one).
  const { send, sent } = scripted((nodeId) => {
    if (nodeId !== 1) return 'answer';
    metadata.splice(1);
    return 'fail';
  }, metadata);
  const sending = send({ acks: -1, topicMessages: [{ topic: 't', messages: [{ value: 'a' }, { value: 'b' }] }] });
  await assert.rejects(sending, { name: 'KafkaJSMetadataNotLoaded' });
  assert.deepEqual(
    sent.map((request) => request.partitions.map((p) => p.partition)),
    [[0], [1]],
  );
});

test("a partition an answer failed is sent again alone; the answer's written partition is not", async () => {
  // Broker 0 leads both partitions, as the producer has it; its first answer writes partition 1
  // and fails partition 0 (NOT_LEADER_OR_FOLLOWER: it no longer leads it). Real brokers answer so
  // in test/integration/kafka-send-mixed-answer.test.ts; here the results and the refresh are looked at.
  const { send, sent, refreshes } = scripted(
    (_nodeId, attempt) => (attempt === 0 ? 'failsFirst' : 'answer'),
    [
      { partitionId: 0, leader: 0 },
      { partitionId: 1, leader: 0 },
    ],
    false,
  );
  const results = await send({ acks: -1, topicMessages: [{ topic: 't', messages: ['a', 'b', 'c'].map((value) => ({ value })) }] });
  assert.deepEqual(
    sent.map((request) => request.partitions.map((p) => [p.partition, p.messages])),
    [
      [
        [0, ['a', 'c']],
        [1, ['b']],
      ],
      [[0, ['a', 'c']]],
    ],
  );
  assert.equal(refreshes(), 1, 'the metadata is refreshed before the retry');
  assert.deepEqual(
    results.map((r) => [(r as { partition: number }).partition, (r as { errorCode: number }).errorCode]),
    [
      [1, 0],
      [0, 0],
    ],
    'one result per partition, as written',
  );
});

test("an idempotent producer's request that an answer failed in part is sent again whole, under the numbers it went with", async () => {
  // Kafka drops partition 1's batch, appended, by its numbers; were they counted past it, a
  // batch that failed to the end would not go again as it went (see resend.ts).
  const { send, sent } = scripted(
    (_nodeId, attempt) => (attempt === 0 ? 'failsFirst' : 'answer'),
    [
      { partitionId: 0, leader: 0 },
      { partitionId: 1, leader: 0 },
    ],
    true,
  );
  const results = await send({ acks: -1, topicMessages: [{ topic: 't', messages: ['a', 'b', 'c'].map((value) => ({ value })) }] });
  const request = {
    nodeId: 0,
    partitions: [
      { partition: 0, firstSequence: 0, messages: ['a', 'c'] },
      { partition: 1, firstSequence: 0, messages: ['b'] },
    ],
  };
  assert.deepEqual(sent, [request, request]);
  assert.deepEqual(results.map((r) => (r as { partition: number }).partition).sort(), [0, 1]);
});

test('the produce parse hands on a failed partition only with its error, and fails the request for an error no retry fixes', async () => {
  // kafkajs' own Produce protocol, wrapped as patchKafkajs does. A broker that answers one
  // partition NOT_LEADER_OR_FOLLOWER and another TOPIC_AUTHORIZATION_FAILED needs ACLs and a
  // leader moved at once: the answers are given to the parse directly.
  const produce = require('kafkajs/src/protocol/requests/produce/index.js') as { protocol: Parameters<typeof returningRecordRefusals>[0] };
  const protocol = returningRecordRefusals(produce.protocol, createErrorFromCode);
  const answer = (...errorCodes: number[]) => ({ topics: [{ topicName: 't', partitions: errorCodes.map((errorCode, partition) => ({ partition, errorCode })) }] });
  const parse = (marked: boolean, data: ReturnType<typeof answer>, message: object = { value: 'a' }) => {
    const topicData = [{ topic: 't', partitions: [0, 1, 2].map((partition) => ({ partition, messages: [message] })) }];
    if (marked) RETRIED_PER_PARTITION.add(topicData);
    return protocol({ version: 7 })({ topicData }).response.parse(data) as Promise<typeof data>;
  };
  const TOPIC_AUTHORIZATION_FAILED = 29;
  const MESSAGE_TOO_LARGE = 10;
  // Without idempotence: the failed partition carries its error, the others nothing.
  const parsed = await parse(true, answer(0, NOT_LEADER, 0));
  assert.deepEqual(
    parsed.topics[0]?.partitions.map((p) => (p as { retriableError?: { type: string } }).retriableError?.type),
    [undefined, 'NOT_LEADER_FOR_PARTITION', undefined],
  );
  // An error no retry fixes fails the request, as kafkajs' parse does.
  await assert.rejects(parse(true, answer(0, NOT_LEADER, TOPIC_AUTHORIZATION_FAILED)), { type: 'TOPIC_AUTHORIZATION_FAILED' });
  // An idempotent producer's request (not marked) fails whole, also next to a refusal.
  await assert.rejects(parse(false, answer(0, NOT_LEADER, 0)), { type: 'NOT_LEADER_FOR_PARTITION' });
  await assert.rejects(parse(false, answer(0, NOT_LEADER, MESSAGE_TOO_LARGE), { value: 'a', [SOURCE_RECORD]: {} }), { type: 'NOT_LEADER_FOR_PARTITION' });
  // A refusal and a retriable error, each on its partition.
  const both = await parse(true, answer(MESSAGE_TOO_LARGE, NOT_LEADER, 0), { value: 'a', [SOURCE_RECORD]: {} });
  assert.deepEqual(
    both.topics[0]?.partitions.map((p) => [(p as { refusal?: { type: string } }).refusal?.type, (p as { retriableError?: { type: string } }).retriableError?.type]),
    [
      ['MESSAGE_TOO_LARGE', undefined],
      [undefined, 'NOT_LEADER_FOR_PARTITION'],
      [undefined, undefined],
    ],
  );
});
