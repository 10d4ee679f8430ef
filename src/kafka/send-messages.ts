// kafkajs 2.2.4's producer/sendMessages keeps, across the attempts of one send, the answer of each
// broker, and on a retry sends only to the brokers that have none (kafkajs issue 1303, pull
// request 1798 unreleased). A partition whose leader failed and whose leadership moved, before
// the retry, to a broker that had answered (a leader election, a rolling restart) was never sent
// again: the send resolved as if its records were written, and the sink acknowledged them, lost.
// The replacement here keeps the answer of each partition instead: a retry sends every partition
// with records not answered for yet to its leader at that time, whichever broker answered before.
// A broker's answer is read per partition too (see produce-refusals.ts): kafkajs' parse threw
// the first partition's error for the whole request, and without idempotence a retry wrote again
// the partitions the broker had appended (one partition whose leader moved among others it still
// leads, say).
import { RETRIED_PER_PARTITION } from './produce-refusals.ts';

/** kafkajs' message, as the producer hands it on; handed on as it is. */
type Message = object;

interface TopicMessages {
  readonly topic: string;
  readonly messages: readonly Message[];
}

interface Broker {
  readonly nodeId: number;
  produce(request: object): Promise<ProduceAnswer>;
}

interface ProduceAnswer {
  readonly topics: readonly { readonly topicName: string; readonly partitions: readonly PartitionAnswer[] }[];
}

/** A partition of kafkajs' answer (refused ones carry `refusal`, failed ones `retriableError`: see produce-refusals.ts). */
interface PartitionAnswer {
  readonly partition: number;
  readonly errorCode: number;
  readonly retriableError?: Error;
}

/** What sendMessages uses of kafkajs' Cluster. */
export interface SendCluster {
  readonly targetTopics: Iterable<string>;
  refreshMetadataIfNecessary(): Promise<void>;
  refreshMetadata(): Promise<void>;
  findTopicPartitionMetadata(topic: string): readonly unknown[];
  findLeaderForPartitions(topic: string, partitions: string[]): Record<string, number[]>;
  findBroker(args: { nodeId: string }): Promise<Broker>;
  addMultipleTargetTopics(topics: string[]): Promise<void>;
  removeBroker(args: { host: string; port: number }): void;
  isConnected(): boolean;
  connect(): Promise<void>;
}

/** What sendMessages uses of kafkajs' EosManager. */
export interface SendEosManager {
  /** True for an idempotent (or transactional) producer: it has a producer id, and numbers its batches. */
  isInitialized(): boolean;
  isTransactional(): boolean;
  getTransactionalId(): string | undefined;
  getProducerId(): number;
  getProducerEpoch(): number;
  getSequence(topic: string, partition: number): number;
  updateSequence(topic: string, partition: number, increment: number): void;
  addPartitionsToTransaction(topicData: readonly TopicData[]): Promise<void>;
  acquireBrokerLock(broker: Broker): Promise<void>;
  releaseBrokerLock(broker: Broker): void | Promise<void>;
}

interface TopicData {
  readonly topic: string;
  readonly partitions: { readonly partition: number; readonly messages: readonly Message[]; firstSequence?: number }[];
}

type Retrier = <T>(attempt: (bail: (error: Error) => void, retryCount: number, retryTime: number) => Promise<T>) => Promise<T>;

interface Logger {
  debug(message: string, extra?: object): void;
  error(message: string, extra?: object): void;
}

type Partitioner = (args: { topic: string; partitionMetadata: readonly unknown[]; message: unknown }) => number;

/**
 * What kafkajs' producer/groupMessagesPerPartition returns, in one pass (its own copied the
 * partition's array once per message: quadratic in the batch size, ~3% of the gateway's CPU at
 * batches of 500).
 */
export function groupMessagesPerPartition<M>({
  topic,
  partitionMetadata,
  messages,
  partitioner,
}: {
  readonly topic: string;
  readonly partitionMetadata: readonly unknown[];
  readonly messages: readonly M[];
  readonly partitioner: Partitioner;
}): Record<number, M[]> {
  const result: Record<number, M[]> = {};
  if (partitionMetadata.length === 0) return result;
  for (const message of messages) (result[partitioner({ topic, partitionMetadata, message })] ??= []).push(message);
  return result;
}

/** What sendMessages takes of kafkajs' own modules. */
export interface SendMessagesDeps {
  readonly KafkaJSMetadataNotLoaded: new (message: string) => Error;
  readonly staleMetadata: (error: unknown) => boolean;
}

interface SendOptions {
  readonly logger: Logger;
  readonly cluster: SendCluster;
  readonly partitioner: Partitioner;
  readonly eosManager: SendEosManager;
  readonly retrier: Retrier;
}

interface SendArgs {
  readonly acks: number;
  readonly timeout?: number;
  readonly compression?: number;
  readonly topicMessages: readonly TopicMessages[];
}

type KafkaError = Error & { readonly retriable?: boolean; readonly host?: string; readonly port?: number };

/** A topic's messages not answered for yet. */
interface PendingTopic {
  /** Before the send's first attempt that sent requests: its messages in order, to be dealt to partitions. */
  messages: readonly Message[] | undefined;
  /** After: the messages of each partition not answered for, as they were sent to it. */
  partitions: Record<number, readonly Message[]>;
  /** Given without messages: looked up all the same, as kafkajs does. */
  readonly empty: boolean;
}

/**
 * kafkajs' producer/sendMessages module (its export, a factory per producer), sending as kafkajs
 * does but keeping the answers per partition: it resolves, once every message's partition was
 * answered for, with one entry per partition answered (written, or refused: see
 * produce-refusals.ts). Each attempt sends the messages not answered for yet to the leaders of
 * their partitions at the time, a broker that answered before included; a partition answered for
 * is not sent again. Without idempotence, a partition that an answer failed with a retriable
 * error (its leader moved, say) is not answered for: sent again, as after a failed request,
 * without the answer's others. An idempotent producer's request is sent again whole, as kafkajs
 * does: Kafka drops the batches it had appended by their numbers, so none is written twice, and
 * when such a request fails to the end of the send its batches keep the numbers they went with,
 * for the sink to send the failed batch again as it went (resend.ts): a partition counted past its
 * numbers while another of its request went on failing would be written again there.
 * Messages are dealt to partitions once, at the first attempt that sends requests, and each
 * partition's stay together after, in order: a request that failed leaves its
 * partitions' messages to the next attempt, their sequence numbers taken back as kafkajs does, so
 * that an idempotent producer sends each partition the same batch again under the same numbers
 * (Kafka drops a batch it has by its numbers alone: a partitioner that deals records round robin
 * would have dealt other records under the numbers of an appended batch, dropped, never written),
 * also when another request of the attempt failed before it was sent. Messages are told apart by
 * their place in the send, not their identity (the same object may be sent twice). An attempt
 * waits for all its requests before the next, so that a partition is never in two requests at once.
 */
export function sendMessages({ KafkaJSMetadataNotLoaded, staleMetadata }: SendMessagesDeps) {
  return ({ logger, cluster, partitioner, eosManager, retrier }: SendOptions) =>
    async ({ acks, timeout, compression, topicMessages }: SendArgs): Promise<object[]> => {
      const answered: object[] = [];
      /** Per topic (kafkajs' sendBatch merges a topic's entries, merged here too). */
      const pending = new Map<string, PendingTopic>();
      for (const { topic, messages } of topicMessages) {
        const known = pending.get(topic);
        if (known === undefined) pending.set(topic, { messages, partitions: {}, empty: messages.length === 0 });
        else pending.set(topic, { messages: (known.messages as readonly Message[]).concat(messages), partitions: {}, empty: known.empty && messages.length === 0 });
      }

      /** One request per leader of the pending messages' partitions; each topic's messages dealt to partitions if they were not. */
      const createRequests = async (): Promise<Map<Broker, TopicData[]>> => {
        await cluster.refreshMetadataIfNecessary();
        const requests = new Map<Broker, TopicData[]>();
        const dealt: [PendingTopic, Record<number, Message[]>][] = [];
        for (const [topic, state] of pending) {
          const { messages } = state;
          if (messages === undefined && !state.empty && !hasKeys(state.partitions)) continue;
          const partitionMetadata = cluster.findTopicPartitionMetadata(topic);
          if (partitionMetadata.length === 0) {
            logger.debug('Producing to topic without metadata', { topic, targetTopics: Array.from(cluster.targetTopics) });
            throw new KafkaJSMetadataNotLoaded('Producing to topic without metadata');
          }
          let messagesPerPartition = state.partitions;
          if (messages !== undefined) {
            const grouped = groupMessagesPerPartition({ topic, partitionMetadata, messages, partitioner });
            dealt.push([state, grouped]);
            messagesPerPartition = grouped;
          }
          const partitions = Object.keys(messagesPerPartition);
          const partitionsPerLeader = cluster.findLeaderForPartitions(topic, partitions);
          // kafkajs leaves out, unsent, a partition the metadata does not have: it is looked up again.
          let led = 0;
          for (const nodeId in partitionsPerLeader) led += (partitionsPerLeader[nodeId] as number[]).length;
          if (led < partitions.length) throw new KafkaJSMetadataNotLoaded('Producing to a partition without metadata');
          for (const nodeId in partitionsPerLeader) {
            const broker = await cluster.findBroker({ nodeId });
            let topicData = requests.get(broker);
            if (topicData === undefined) requests.set(broker, (topicData = []));
            const leaderPartitions = partitionsPerLeader[nodeId] as number[];
            topicData.push({ topic, partitions: leaderPartitions.map((partition) => ({ partition, messages: messagesPerPartition[partition] as Message[] })) });
          }
        }
        // Every request is made: the messages stay in the partitions they are sent to.
        for (const [state, grouped] of dealt) {
          state.messages = undefined;
          state.partitions = grouped;
        }
        return requests;
      };

      const produce = async (broker: Broker, topicData: TopicData[]): Promise<void> => {
        await eosManager.acquireBrokerLock(broker);
        try {
          if (eosManager.isTransactional()) await eosManager.addPartitionsToTransaction(topicData);
          for (const { topic, partitions } of topicData) {
            for (const entry of partitions) {
              entry.firstSequence = eosManager.getSequence(topic, entry.partition);
              eosManager.updateSequence(topic, entry.partition, entry.messages.length);
            }
          }
          let response: ProduceAnswer;
          if (!eosManager.isInitialized()) RETRIED_PER_PARTITION.add(topicData);
          try {
            response = await broker.produce({
              transactionalId: eosManager.isTransactional() ? eosManager.getTransactionalId() : undefined,
              producerId: eosManager.getProducerId(),
              producerEpoch: eosManager.getProducerEpoch(),
              acks,
              timeout,
              compression,
              topicData,
            });
          } catch (error) {
            for (const { topic, partitions } of topicData) for (const entry of partitions) eosManager.updateSequence(topic, entry.partition, -entry.messages.length);
            throw error;
          }
          const answers = acks === 0 ? undefined : response.topics.flatMap(({ topicName, partitions }) => partitions.map((p) => ({ topicName, ...p })));
          let unanswered = false;
          /** The first retriable error of a partition Kafka failed while it answered for others. */
          let failed: Error | undefined;
          for (const { topic, partitions } of topicData) {
            const state = pending.get(topic) as PendingTopic;
            for (const entry of partitions) {
              const answer = answers?.find((a) => a.topicName === topic && a.partition === entry.partition);
              // Without acks nothing is answered: what was sent counts as written, as in kafkajs.
              if (answers === undefined || (answer !== undefined && answer.retriableError === undefined)) {
                delete state.partitions[entry.partition];
                continue;
              }
              // Sent again in a later attempt, the same messages (under the same numbers, as kafkajs).
              eosManager.updateSequence(topic, entry.partition, -entry.messages.length);
              if (answer === undefined) unanswered = true;
              else failed ??= answer.retriableError;
            }
          }
          if (answers !== undefined) answered.push(...answers.filter((a) => a.retriableError === undefined));
          // Kafka's own error (NOT_LEADER_OR_FOLLOWER, say), for the retry to refresh the metadata as after a failed request.
          if (failed !== undefined) throw failed;
          if (unanswered) throw Object.assign(new Error('Kafka left partitions of a produce request out of its answer'), { retriable: true });
        } finally {
          await eosManager.releaseBrokerLock(broker);
        }
      };

      return retrier(async (bail, retryCount, retryTime) => {
        await cluster.addMultipleTargetTopics(Array.from(pending.keys()));
        try {
          const requests = await createRequests();
          const settled = await Promise.allSettled(Array.from(requests, ([broker, topicData]) => produce(broker, topicData)));
          const failures = settled.flatMap((s) => (s.status === 'rejected' ? [s.reason as KafkaError] : []));
          if (failures.length === 0) return answered;
          for (const e of failures.slice(1)) {
            if (e.name === 'KafkaJSConnectionClosedError' && e.host !== undefined && e.port !== undefined) cluster.removeBroker({ host: e.host, port: e.port });
          }
          throw failures[0];
        } catch (caught) {
          const e = caught as KafkaError;
          if (e.name === 'KafkaJSConnectionClosedError') cluster.removeBroker({ host: e.host as string, port: e.port as number });
          if (!cluster.isConnected()) {
            logger.debug(`Cluster has disconnected, reconnecting: ${e.message}`, { retryCount, retryTime });
            await cluster.connect();
            await cluster.refreshMetadata();
            throw e;
          }
          // As kafkajs: the metadata may be stale (a leader moved, partitions added).
          if (
            staleMetadata(e) ||
            e.name === 'KafkaJSMetadataNotLoaded' ||
            e.name === 'KafkaJSConnectionError' ||
            e.name === 'KafkaJSConnectionClosedError' ||
            (e.name === 'KafkaJSProtocolError' && e.retriable === true)
          ) {
            logger.error(`Failed to send messages: ${e.message}`, { retryCount, retryTime });
            await cluster.refreshMetadata();
            throw e;
          }
          logger.error(`${e.message}`, { retryCount, retryTime });
          if (e.retriable === true) throw e;
          bail(e);
          return answered;
        }
      });
    };
}

/** Whether `record` has a key of its own. */
function hasKeys(record: object): boolean {
  for (const _ in record) return true;
  return false;
}
