// kafkajs 2.2.4's producer/sendMessages keeps, across the attempts of one send, the answer of each
// broker, and on a retry sends only to the brokers that have none (kafkajs issue 1303, pull
// request 1798 unreleased). A partition whose leader failed and whose leadership moved, before
// the retry, to a broker that had answered (a leader election, a rolling restart) was never sent
// again: the send resolved as if its records were written, and the sink acknowledged them, lost.
// The replacement here keeps the answer of each partition instead: a retry sends every partition
// with records not answered for yet to its leader at that time, whichever broker answered before.

/** kafkajs' message, as the producer hands it on; only its identity is used here. */
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

/** A partition of kafkajs' answer (refused ones carry `refusal`, see produce-refusals.ts). */
interface PartitionAnswer {
  readonly partition: number;
  readonly errorCode: number;
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

type Group = (args: { topic: string; partitionMetadata: readonly unknown[]; messages: readonly Message[]; partitioner: Partitioner }) => Record<number, Message[]>;

/** What sendMessages takes of kafkajs' own modules. */
export interface SendMessagesDeps {
  readonly KafkaJSMetadataNotLoaded: new (message: string) => Error;
  readonly staleMetadata: (error: unknown) => boolean;
  readonly groupMessagesPerPartition: Group;
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

/**
 * kafkajs' producer/sendMessages module (its export, a factory per producer), sending as kafkajs
 * does but keeping the answers per partition: it resolves, once every message's partition was
 * answered for, with one entry per partition answered (written, or refused: see
 * produce-refusals.ts). Each attempt groups the messages of the partitions not answered for yet
 * by the metadata of the time and sends them to their leaders, a broker that answered before
 * included; a partition answered for is not sent again. A request that failed leaves all its
 * partitions to the next attempt, their sequence numbers taken back as kafkajs does, so that an
 * idempotent producer sends them again under the same ones. An attempt waits for all its
 * requests before the next, so that a partition is never in two requests at once.
 */
export function sendMessages({ KafkaJSMetadataNotLoaded, staleMetadata, groupMessagesPerPartition }: SendMessagesDeps) {
  return ({ logger, cluster, partitioner, eosManager, retrier }: SendOptions) =>
    async ({ acks, timeout, compression, topicMessages }: SendArgs): Promise<object[]> => {
      const answered: object[] = [];
      /** Per topic, the messages whose partition has no answer yet. */
      const pending = new Map(topicMessages.map(({ topic, messages }) => [topic, messages]));

      /** One request per leader of the pending messages' partitions. */
      const createRequests = async (): Promise<Map<Broker, TopicData[]>> => {
        await cluster.refreshMetadataIfNecessary();
        const requests = new Map<Broker, TopicData[]>();
        for (const { topic, messages: all } of topicMessages) {
          const messages = pending.get(topic) ?? [];
          if (messages.length === 0 && all.length > 0) continue;
          const partitionMetadata = cluster.findTopicPartitionMetadata(topic);
          if (partitionMetadata.length === 0) {
            logger.debug('Producing to topic without metadata', { topic, targetTopics: Array.from(cluster.targetTopics) });
            throw new KafkaJSMetadataNotLoaded('Producing to topic without metadata');
          }
          const messagesPerPartition = groupMessagesPerPartition({ topic, partitionMetadata, messages, partitioner });
          const partitions = Object.keys(messagesPerPartition);
          const partitionsPerLeader = cluster.findLeaderForPartitions(topic, partitions);
          // kafkajs leaves out, unsent, a partition the metadata does not have: it is looked up again.
          const led = Object.values(partitionsPerLeader).reduce((n, p) => n + p.length, 0);
          if (led < partitions.length) throw new KafkaJSMetadataNotLoaded('Producing to a partition without metadata');
          for (const [nodeId, leaderPartitions] of Object.entries(partitionsPerLeader)) {
            const broker = await cluster.findBroker({ nodeId });
            const partitionsOfTopic = leaderPartitions.map((partition) => ({ partition, messages: messagesPerPartition[partition] as Message[] }));
            const request = requests.get(broker) ?? [];
            request.push({ topic, partitions: partitionsOfTopic });
            requests.set(broker, request);
          }
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
          const takeBack = (topic: string, entry: TopicData['partitions'][number]) => eosManager.updateSequence(topic, entry.partition, -entry.messages.length);
          let response: ProduceAnswer;
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
            for (const { topic, partitions } of topicData) for (const entry of partitions) takeBack(topic, entry);
            throw error;
          }
          const answers = acks === 0 ? undefined : response.topics.flatMap(({ topicName, partitions }) => partitions.map((p) => ({ topicName, ...p })));
          let unanswered = false;
          for (const { topic, partitions } of topicData) {
            const done = new Set<Message>();
            for (const entry of partitions) {
              // Without acks nothing is answered: what was sent counts as written, as in kafkajs.
              if (answers === undefined || answers.some((a) => a.topicName === topic && a.partition === entry.partition)) {
                for (const message of entry.messages) done.add(message);
              } else {
                takeBack(topic, entry);
                unanswered = true;
              }
            }
            pending.set(
              topic,
              (pending.get(topic) ?? []).filter((m) => !done.has(m)),
            );
          }
          if (answers !== undefined) answered.push(...answers);
          if (unanswered) throw Object.assign(new Error('Kafka left partitions of a produce request out of its answer'), { retriable: true });
        } finally {
          await eosManager.releaseBrokerLock(broker);
        }
      };

      return retrier(async (bail, retryCount, retryTime) => {
        await cluster.addMultipleTargetTopics(topicMessages.map(({ topic }) => topic));
        try {
          const requests = await createRequests();
          const settled = await Promise.allSettled(Array.from(requests, ([broker, topicData]) => produce(broker, topicData)));
          const failures = settled.flatMap((s) => (s.status === 'rejected' ? [s.reason as KafkaError] : []));
          for (const e of failures.slice(1)) {
            if (e.name === 'KafkaJSConnectionClosedError' && e.host !== undefined && e.port !== undefined) cluster.removeBroker({ host: e.host, port: e.port });
          }
          if (failures[0] !== undefined) throw failures[0];
          return answered;
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
