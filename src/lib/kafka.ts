/**
 * Kafka as RxJS streams, for use outside the gateway: `import { fromKafka, toKafka, kafkaProducer } from 'ferry/kafka'`.
 * The same source and sink a bridge's `kafka:` entry runs (kafkajs underneath).
 */
import type { z } from 'zod';
import { createEnvelope } from '../core/envelope.ts';
import type { Sink, Source } from '../core/stream.ts';
import { kafkaSink } from '../kafka/sink.ts';
import { kafkaSource } from '../kafka/source.ts';
import { SinkClient } from './client.ts';
import { type StreamOptions, sinkOf, sourceOf } from './component.ts';

export type { Delivery } from '../core/delivery.ts';
export type { Envelope } from '../core/envelope.ts';
export type { Sink, SinkEvent, Source } from '../core/stream.ts';
export type { StreamOptions } from './component.ts';

/** The options of `fromKafka`: those of a bridge's `from: { kafka: ... }` (docs/reference/sources/kafka.md). */
export type KafkaSourceConfig = z.input<typeof kafkaSource.schema>;
/** The options of `toKafka`: those of a bridge's `to: [{ kafka: ... }]` (docs/reference/sinks/kafka.md). */
export type KafkaSinkConfig = z.input<typeof kafkaSink.schema>;
/** The options of `kafkaProducer`: a Kafka sink's, without its `topic` (each `send` names one). */
export type KafkaProducerConfig = Omit<KafkaSinkConfig, 'topic'>;

/**
 * Messages of Kafka topics, read in a consumer group: each delivery's `ack()` lets its offset
 * be committed (in order per partition), `nack()` has it read again. Unsubscribing leaves the
 * group. Throws a ConfigError (CONFIG_INVALID) naming each wrong option.
 */
export function fromKafka(config: KafkaSourceConfig, options?: StreamOptions): Source {
  return sourceOf(kafkaSource, config, options);
}

/**
 * An operator writing each delivery to Kafka (topic, key and headers from templates such as
 * `${topic}` or `${payload.site}`), acked after Kafka acknowledged its batch, nacked when it
 * could not be written; emits one event per batch written or failed.
 */
export function toKafka(config: KafkaSinkConfig, options?: StreamOptions): Sink {
  return sinkOf(kafkaSink, config, options);
}

/** One message for `KafkaProducer.send`. */
export interface KafkaMessage {
  readonly value: string | Uint8Array;
  readonly key?: string;
  readonly headers?: Readonly<Record<string, string>>;
}

export interface KafkaProducer {
  /**
   * Resolves when Kafka acknowledged every message (with the producer's `acks`); rejects with
   * the error otherwise, after kafkajs' `retries` with their backoff (about 9 s with the
   * defaults for a broker that refuses connections): an UPSTREAM_UNAVAILABLE FerryError naming
   * the brokers and the cause when none could be reached. Nothing is retried after that.
   */
  send(topic: string, message: KafkaMessage | string | Uint8Array | readonly (KafkaMessage | string | Uint8Array)[]): Promise<void>;
  /** Sends what was handed over, then disconnects. */
  close(): Promise<void>;
}

/**
 * A Kafka producer for one-off sends, on the Kafka sink's code: batching, retries, the
 * murmur2 partitioner of Java clients, idempotence when configured.
 *
 * ```ts
 * const producer = kafkaProducer({ brokers: 'localhost:9092' });
 * await producer.send('commands', { key: 'sensor-1', value: JSON.stringify({ reboot: true }) });
 * await producer.close();
 * ```
 */
export function kafkaProducer(config: KafkaProducerConfig, options?: StreamOptions): KafkaProducer {
  const client = new SinkClient(toKafka({ ...config, topic: '${topic}' }, options));
  return {
    send(topic, message) {
      const messages = Array.isArray(message) ? message : [message];
      return client.write(
        messages.map((m: KafkaMessage | string | Uint8Array) => {
          const one: KafkaMessage = typeof m === 'string' || m instanceof Uint8Array ? { value: m } : m;
          return createEnvelope({
            topic,
            payload: one.value,
            origin: { source: 'kafkaProducer' },
            ...(one.key === undefined ? {} : { key: one.key }),
            ...(one.headers === undefined ? {} : { headers: one.headers }),
          });
        }),
      );
    },
    close: () => client.close(),
  };
}
