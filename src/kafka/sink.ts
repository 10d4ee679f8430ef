import { z } from 'zod';
import { resourceSink } from '../core/batching-sink.ts';
import type { SinkComponent } from '../core/component.ts';
import { wrapError } from '../core/errors.ts';
import type { Envelope } from '../core/envelope.ts';
import { type KafkaRecord, createKafkaProducer } from './client.ts';

const brokers = z
  .union([z.array(z.string().min(1)).min(1), z.string().min(1).transform((s) => s.split(',').map((b) => b.trim()).filter((b) => b !== ''))])
  .pipe(z.array(z.string().regex(/^[^:\s]+:\d+$/, 'expected host:port')).min(1))
  .meta({ description: 'Bootstrap brokers: a list or a comma-separated string of host:port.', examples: ['${KAFKA_BROKERS}', ['kafka-1:9092', 'kafka-2:9092']] });

const schema = z.strictObject({
  brokers,
  topic: z
    .string()
    .regex(/^[A-Za-z0-9._-]{1,249}$/, 'a Kafka topic is 1 to 249 letters, digits, ".", "_" or "-"')
    .meta({ description: 'Kafka topic the messages are written to.', examples: ['iot.telemetry'] }),
  clientId: z.string().min(1).default('ferry').meta({ description: 'Kafka client id.', examples: ['ferry-site-7'] }),
  acks: z.enum(['all', 'leader']).default('all').meta({ description: '`all`: acknowledged by every in-sync replica; `leader`: by the partition leader only.', examples: ['all'] }),
  compression: z.enum(['none', 'gzip']).default('none').meta({ description: 'Batch compression.', examples: ['gzip'] }),
  batchSize: z.int().min(1).default(500).meta({ description: 'Most messages in one produce request.', examples: [500] }),
  batchTimeMs: z.int().min(0).default(10).meta({ description: 'Longest a message waits for its batch, in milliseconds.', examples: [10] }),
  connectionTimeoutMs: z.int().min(1).default(3000).meta({ description: 'TCP connect timeout to a broker.', examples: [3000] }),
  retries: z.int().min(0).default(5).meta({ description: 'Retries of one produce or connect attempt (with backoff) before the batch is reported failed and not acknowledged.', examples: [5] }),
  requestTimeoutMs: z.int().min(1).default(30000).meta({ description: 'Produce request timeout.', examples: [30000] }),
});

export type KafkaSinkConfig = z.output<typeof schema>;

/**
 * Writes messages to one Kafka topic. The key is the device's client id (so one device's
 * messages stay in one partition, in order); the envelope id and the MQTT topic travel as
 * headers `ferry-id` and `mqtt-topic`. A delivery is acked after Kafka acknowledged its batch.
 */
export const kafkaSink: SinkComponent<typeof schema> = {
  kind: 'kafka',
  description: 'Writes messages to a Kafka topic.',
  schema,
  create: (config, ctx) => {
    const component = `kafka sink of bridge '${ctx.bridge}'`;
    return resourceSink(
      config,
      async () => {
        const producer = createKafkaProducer({ ...config, logger: ctx.logger });
        try {
          await producer.connect();
          return producer;
        } catch (error) {
          await producer.disconnect().catch(() => {});
          throw wrapError('UPSTREAM_UNAVAILABLE', `${component}: cannot connect to ${config.brokers.join(',')}`, error, {
            component,
            bridge: ctx.bridge,
            retryable: true,
          });
        }
      },
      (producer) => {
        producer.disconnect().catch((error: unknown) => ctx.logger.warn({ err: error }, `${component}: disconnect failed`));
      },
      async (producer, batch) => {
        try {
          await producer.send(config.topic, batch.map(({ envelope }) => toRecord(envelope)));
        } catch (error) {
          throw wrapError('SINK_WRITE_FAILED', `${component}: produce to ${config.topic} failed`, error, {
            component,
            bridge: ctx.bridge,
            topic: config.topic,
            retryable: !isPermanent(error),
          });
        }
      },
    );
  },
};

function toRecord(envelope: Envelope): KafkaRecord {
  return {
    key: envelope.key ?? envelope.origin.clientId ?? null,
    value: envelope.payload,
    headers: { ...envelope.headers, 'ferry-id': envelope.id, 'mqtt-topic': envelope.topic },
    timestamp: envelope.timestamp,
  };
}

/** Kafka errors that no retry can fix: the message or topic itself is refused. */
const PERMANENT = new Set([
  'MESSAGE_TOO_LARGE',
  'INVALID_TOPIC_EXCEPTION',
  'CORRUPT_MESSAGE',
  'INVALID_RECORD',
  'RECORD_LIST_TOO_LARGE',
  'UNSUPPORTED_FOR_MESSAGE_FORMAT',
]);

function isPermanent(error: unknown): boolean {
  for (let e: unknown = error, depth = 0; e !== undefined && e !== null && depth < 5; depth++) {
    const type = (e as { type?: unknown }).type;
    if (typeof type === 'string' && PERMANENT.has(type)) return true;
    e = (e as { originalError?: unknown; cause?: unknown }).originalError ?? (e as { cause?: unknown }).cause;
  }
  return false;
}
