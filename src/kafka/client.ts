import type { Producer } from 'kafkajs';
import type { Logger } from 'pino';
import { type Compression, useCompression } from './codecs.ts';
import { patchKafkajs } from './kafkajs-patches.ts';
import { memoizedDefaultPartitioner } from './partitioner.ts';

/** One record for Kafka; headers are strings, as Ferry keeps them. */
export interface KafkaRecord {
  readonly key: string | null;
  readonly value: Uint8Array;
  readonly headers: Readonly<Record<string, string>>;
  readonly timestamp: number;
}

/** The records of one batch that go to one topic. */
export interface TopicRecords {
  readonly topic: string;
  readonly records: readonly KafkaRecord[];
}

/**
 * The slice of a Kafka producer that Ferry calls, so that another client can replace
 * kafkajs behind it. `send` writes every topic's records in one request per broker and
 * resolves only when the brokers acknowledged all of them.
 */
export interface KafkaProducer {
  connect(): Promise<void>;
  send(batch: readonly TopicRecords[]): Promise<void>;
  disconnect(): Promise<void>;
}

export interface KafkaProducerOptions {
  readonly brokers: readonly string[];
  readonly clientId: string;
  readonly acks: 'all' | 'leader';
  readonly compression: Compression;
  /** kafkajs' idempotent producer: the broker drops a retried batch it already has. */
  readonly idempotent: boolean;
  /** Produce requests in flight per broker connection; unlimited when absent. */
  readonly maxInFlightRequests?: number | undefined;
  readonly connectionTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly retries: number;
  readonly logger: Logger;
}

/**
 * A kafkajs producer. kafkajs (and a compression codec) is loaded on first connect, so a
 * gateway without Kafka bridges does not pay for it at startup.
 */
export function createKafkaProducer(options: KafkaProducerOptions): KafkaProducer {
  let opened: { producer: Producer; compression: number } | undefined;
  return {
    connect: async () => {
      opened ??= await openProducer(options);
      await opened.producer.connect();
    },
    disconnect: async () => {
      await opened?.producer.disconnect();
    },
    send: async (batch) => {
      if (opened === undefined) throw new Error('producer is not connected');
      await opened.producer.sendBatch({
        acks: options.acks === 'all' ? -1 : 1,
        compression: opened.compression,
        topicMessages: batch.map(({ topic, records }) => ({
          topic,
          messages: records.map((r) => ({
            key: r.key,
            value: Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength),
            headers: { ...r.headers },
            timestamp: String(r.timestamp),
          })),
        })),
      });
    },
  };
}

async function openProducer(options: KafkaProducerOptions): Promise<{ producer: Producer; compression: number }> {
  patchKafkajs();
  const kafkajs = await import('kafkajs');
  const { Kafka, Partitioners, logLevel } = kafkajs;
  // CompressionCodecs is not among the names Node finds in kafkajs' CommonJS exports.
  const compression = useCompression(options.compression, { CompressionTypes: kafkajs.CompressionTypes, CompressionCodecs: kafkajs.default.CompressionCodecs });
  const kafka = new Kafka({
    clientId: options.clientId,
    brokers: [...options.brokers],
    connectionTimeout: options.connectionTimeoutMs,
    requestTimeout: options.requestTimeoutMs,
    retry: { retries: options.retries },
    logLevel: logLevel.WARN,
    logCreator: () => ({ namespace, level, log }) => {
      const { message, ...extra } = log;
      const line = { kafkajs: namespace, ...extra };
      if (level <= logLevel.ERROR) options.logger.error(line, message);
      else options.logger.warn(line, message);
    },
  });
  // The default (murmur2) partitioner, named so kafkajs does not warn about its v2 change.
  const producer = kafka.producer({
    allowAutoTopicCreation: true,
    createPartitioner: memoizedDefaultPartitioner(Partitioners.DefaultPartitioner),
    idempotent: options.idempotent,
    ...(options.maxInFlightRequests === undefined ? {} : { maxInFlightRequests: options.maxInFlightRequests }),
  });
  return { producer, compression };
}
