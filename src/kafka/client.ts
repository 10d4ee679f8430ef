import type { Producer } from 'kafkajs';
import type { Logger } from 'pino';

/** One record for Kafka; headers are bytes or strings, as on the wire. */
export interface KafkaRecord {
  readonly key: string | null;
  readonly value: Uint8Array;
  readonly headers: Readonly<Record<string, string>>;
  readonly timestamp: number;
}

/**
 * The slice of a Kafka producer that Ferry calls, so that another client can replace
 * kafkajs behind it. `send` resolves only when the broker acknowledged every record.
 */
export interface KafkaProducer {
  connect(): Promise<void>;
  send(topic: string, records: readonly KafkaRecord[]): Promise<void>;
  disconnect(): Promise<void>;
}

export interface KafkaProducerOptions {
  readonly brokers: readonly string[];
  readonly clientId: string;
  readonly acks: 'all' | 'leader';
  readonly compression: 'none' | 'gzip';
  readonly connectionTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly retries: number;
  readonly logger: Logger;
}

/**
 * A kafkajs producer. kafkajs is loaded on first connect, so a gateway without Kafka
 * bridges does not pay for it at startup.
 */
export function createKafkaProducer(options: KafkaProducerOptions): KafkaProducer {
  let producer: Producer | undefined;
  // kafkajs: 1 = gzip; other codecs need a registered package.
  const compression = options.compression === 'gzip' ? 1 : 0;
  return {
    connect: async () => {
      producer ??= await openProducer(options);
      await producer.connect();
    },
    disconnect: async () => {
      await producer?.disconnect();
    },
    send: async (topic, records) => {
      if (producer === undefined) throw new Error('producer is not connected');
      await producer.send({
        topic,
        acks: options.acks === 'all' ? -1 : 1,
        compression,
        messages: records.map((r) => ({
          key: r.key,
          value: Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength),
          headers: { ...r.headers },
          timestamp: String(r.timestamp),
        })),
      });
    },
  };
}

async function openProducer(options: KafkaProducerOptions): Promise<Producer> {
  const { Kafka, Partitioners, logLevel } = await import('kafkajs');
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
  return kafka.producer({ allowAutoTopicCreation: true, createPartitioner: Partitioners.DefaultPartitioner });
}
