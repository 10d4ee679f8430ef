import { z } from 'zod';
import { resourceSink } from '../core/batching-sink.ts';
import type { SinkComponent } from '../core/component.ts';
import type { Delivery } from '../core/delivery.ts';
import { type FerryError, isFerryError, wrapError } from '../core/errors.ts';
import { compileTemplate, refineTemplate } from '../core/template.ts';
import { type KafkaProducer, type KafkaRecord, createKafkaProducer } from './client.ts';
import { COMPRESSIONS } from './codecs.ts';
import { kafkaConnectionFields } from './connection-fields.ts';
import { allowedTopicProblem, recordRenderer, topicAllowList, topicTemplateProblem, unwritable } from './records.ts';
import { type RecordRefusal, describeRecordRefusal, findingRefusedRecords } from './record-refusals.ts';
import { Resend } from './resend.ts';
import { type TopicRefusal, TopicSender, describeRefusal } from './topic-refusals.ts';
import { lazySchema } from '../core/lazy-schema.ts';
import { MAX_TIMER_MESSAGE, MAX_TIMER_MS } from '../core/timer-limit.ts';

/** A message template: its syntax is checked here, its captures against the source at the bridge. */
const template = z.string().superRefine((source, ctx) => {
  refineTemplate(source, ctx);
});

const RESERVED_HEADERS = ['ferry-id', 'mqtt-topic'];

const schema = lazySchema(() => {
  const connection = kafkaConnectionFields('Produce request timeout.');
  return z
    .strictObject({
      brokers: connection.brokers,
      topic: template
        .superRefine((source, ctx) => {
          let problem: string | undefined;
          try {
            problem = topicTemplateProblem(compileTemplate(source));
          } catch {
            return; // reported by `template`
          }
          if (problem !== undefined) ctx.addIssue({ code: 'custom', message: `topic '${source}': ${problem}` });
        })
        .meta({
          description:
            'Kafka topic the messages are written to: a name or a message template (`${1}`, `${clientId}`, `${payload.site}`...). A message whose topic renders to an invalid name, or whose field has no value, goes to the dead letters.',
          examples: ['iot.telemetry', 'iot.${1}.telemetry'],
        }),
      allowedTopics: z
        .array(
          z.string().superRefine((pattern, ctx) => {
            const problem = allowedTopicProblem(pattern);
            if (problem !== undefined) ctx.addIssue({ code: 'custom', message: `allowed topic '${pattern}': ${problem}` });
          }),
        )
        .min(1)
        .optional()
        .meta({
          description:
            'The only topics this sink writes, as patterns where `*` stands for any run of topic characters but "." (`iot.*.telemetry`). A message whose topic renders to another goes to the dead letters. Set it when the topic template takes device data (`${1}`, `${clientId}`, `${payload.x}`), so that devices cannot make Ferry write to, or the broker auto-create, other topics. Any valid topic when absent.',
          examples: [['iot.*.telemetry']],
        }),
      key: template.optional().meta({
        description: "Record key template; records of one key go to one partition, in order. The message's key, else the device's client id, when absent.",
        examples: ['${1}', '${payload.site}-${clientId}'],
      }),
      headers: z
        .record(z.string().min(1), template)
        .superRefine((headers, ctx) => {
          for (const name of Object.keys(headers).filter((n) => RESERVED_HEADERS.includes(n))) {
            ctx.addIssue({ code: 'custom', path: [name], message: `${name} is set by Ferry (${RESERVED_HEADERS.join(' and ')} are always sent); name this header otherwise` });
          }
        })
        .default({})
        .meta({
          description:
            "Extra record headers: name to message template. `ferry-id` (the message id), `mqtt-topic` and the message's own headers (such as `traceparent`) are always sent.",
          examples: [{ site: '${payload.site}', device: '${clientId}' }],
        }),
      clientId: z
        .string()
        .min(1)
        .default('ferry')
        .meta({ description: 'Kafka client id.', examples: ['ferry-site-7'] }),
      acks: z
        .enum(['all', 'leader'])
        .default('all')
        .meta({ description: '`all`: acknowledged by every in-sync replica; `leader`: by the partition leader only.', examples: ['all'] }),
      idempotent: z
        .boolean()
        .default(false)
        .meta({
          description:
            'Idempotent producer: the broker drops a batch kafkajs retries after a lost response (fewer duplicates). Needs `acks: all` and at most 1 request in flight; experimental in kafkajs.',
          examples: [true],
        }),
      maxInFlightRequests: z
        .int()
        .min(1)
        .optional()
        .meta({
          description: 'Most produce requests in flight per broker; unlimited when absent, 1 with `idempotent`.',
          examples: [1],
        }),
      compression: z
        .enum(COMPRESSIONS)
        .default('none')
        .meta({ description: 'Batch compression; the codec is loaded only when used.', examples: ['zstd'] }),
      // 1,000, the buffer's default window: a sink writes one batch at a time, so a window in one
      // request moves twice as much a round trip as in two (docs/benchmarks.md, A Kafka far away).
      batchSize: z
        .int()
        .min(1)
        .default(1000)
        .meta({ description: 'Most messages in one produce request.', examples: [1000] }),
      batchBytes: z
        .int()
        .min(1)
        .default(512 * 1024)
        .meta({
          description:
            "Most payload bytes in one produce request (a larger message goes alone); keep it well below the broker's message.max.bytes (1 MiB by default), since keys, headers and record overhead come on top.",
          examples: [1048576],
        }),
      batchTimeMs: z
        .int()
        .min(0)
        .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
        .default(10)
        .meta({ description: 'Longest a message waits for its batch, in milliseconds.', examples: [10] }),
      connectionTimeoutMs: connection.connectionTimeoutMs,
      retries: z
        .int()
        .min(0)
        .default(5)
        .meta({
          description:
            'Retries of one produce or connect attempt (with backoff) before the batch is reported failed; the buffer then tries it again, for ever, after its own backoff.',
          examples: [5],
        }),
      requestTimeoutMs: connection.requestTimeoutMs,
    })
    .superRefine((config, ctx) => {
      if (
        config.allowedTopics !== undefined &&
        !config.topic.includes('${') &&
        allowedTopicProblem(config.topic) === undefined &&
        !topicAllowList(config.allowedTopics)(config.topic)
      ) {
        ctx.addIssue({
          code: 'custom',
          path: ['topic'],
          message: `topic '${config.topic}' is not in allowedTopics (${config.allowedTopics.join(', ')}): no message could be written`,
        });
      }
      if (!config.idempotent) return;
      if (config.acks !== 'all') {
        ctx.addIssue({
          code: 'custom',
          path: ['acks'],
          message: 'idempotent: true needs acks: all (an idempotent producer is only safe when every in-sync replica has the batch)',
        });
      }
      if (config.maxInFlightRequests !== undefined && config.maxInFlightRequests !== 1) {
        ctx.addIssue({
          code: 'custom',
          path: ['maxInFlightRequests'],
          message: 'idempotent: true needs maxInFlightRequests: 1 (kafkajs keeps sequence numbers in order only with one request in flight); remove it or set 1',
        });
      }
      if (config.retries < 1) {
        ctx.addIssue({ code: 'custom', path: ['retries'], message: 'idempotent: true needs retries of at least 1 (kafkajs refuses an idempotent producer that may not retry)' });
      }
    });
});

export type KafkaSinkConfig = z.output<ReturnType<typeof schema>>;

/**
 * Writes messages to Kafka topics rendered per message from the `topic` template, with key
 * and headers from theirs. Records of one batch are grouped by topic and sent in one
 * request per broker; a delivery is acked after Kafka acknowledged its batch. A message that
 * can never be written (invalid rendered topic, template field without a value) is nacked
 * alone as MESSAGE_INVALID, and the rest of its batch is written. So is a message whose topic,
 * rendered from message data, Kafka refuses (not created, refused name, not authorized): see
 * TopicSender. A refused fixed topic fails every batch, retried like an outage until it is fixed.
 * A record Kafka refuses for what it is (too large for the topic, say) is found by sending its
 * partition's records again in halves, and nacked alone too: see findingRefusedRecords.
 */
export const kafkaSink: SinkComponent<ReturnType<typeof schema>> = {
  kind: 'kafka',
  description: 'Writes messages to Kafka topics.',
  get schema() {
    return schema();
  },
  templates: (config) => [
    { path: ['topic'], template: config.topic },
    ...(config.key === undefined ? [] : [{ path: ['key'], template: config.key }]),
    ...Object.entries(config.headers).map(([name, source]) => ({ path: ['headers', name], template: source })),
  ],
  create: (config, ctx) => {
    const component = `kafka sink of bridge '${ctx.bridge}'`;
    const render = recordRenderer(config, ctx.sourceFilters ?? [], component);
    const sender = compileTemplate(config.topic).constant ? undefined : new TopicSender({ rememberMs: REFUSAL_MEMORY_MS });
    const producerOptions = {
      ...config,
      maxInFlightRequests: config.idempotent ? 1 : config.maxInFlightRequests,
      logger: ctx.logger,
    };
    /** Writes one batch; resolves with the deliveries refused alone. */
    const writeBatch = async (producer: KafkaProducer, batch: readonly Delivery[]): Promise<Map<Delivery, FerryError>> => {
      const rejected = new Map<Delivery, FerryError>();
      const topics = new Map<string, { readonly records: KafkaRecord[]; readonly deliveries: Delivery[] }>();
      for (const delivery of batch) {
        let rendered: ReturnType<typeof render>;
        try {
          rendered = render(delivery.envelope);
        } catch (error) {
          if (!isFerryError(error, 'MESSAGE_INVALID')) throw error;
          rejected.set(delivery, error);
          ctx.counters.count('kafka.messages.rejected', { bridge: ctx.bridge });
          continue;
        }
        let topic = topics.get(rendered.topic);
        if (topic === undefined) topics.set(rendered.topic, (topic = { records: [], deliveries: [] }));
        topic.records.push(rendered.record);
        topic.deliveries.push(delivery);
      }
      if (topics.size === 0) return rejected;
      const names = [...topics.keys()].join(',');
      const batchTopics = [...topics].map(([topic, { records }]) => ({ topic, records }));
      let refused: ReadonlyMap<string, TopicRefusal> = NO_REFUSALS;
      // Records Kafka refuses for what they are (too large, say), found only when a send fails.
      const refusedRecords = new Map<KafkaRecord, RecordRefusal>();
      const finding = findingRefusedRecords(producer, refusedRecords);
      try {
        if (sender === undefined) await finding.send(batchTopics);
        else refused = await sender.send(finding, batchTopics);
      } catch (error) {
        throw wrapError('SINK_WRITE_FAILED', `${component}: produce to ${names} failed`, error, {
          component,
          bridge: ctx.bridge,
          topic: names,
          retryable: !isPermanent(error),
        });
      }
      for (const [topic, refusal] of refused) {
        const reason = describeRefusal(refusal, REFUSAL_MEMORY_MS);
        const { deliveries } = topics.get(topic) as { readonly deliveries: Delivery[] };
        for (const delivery of deliveries) rejected.set(delivery, unwritable(component, delivery.envelope, reason, refusal.error));
        ctx.counters.count('kafka.messages.rejected', { bridge: ctx.bridge }, deliveries.length);
      }
      if (refusedRecords.size > 0) {
        for (const { records, deliveries } of topics.values()) {
          records.forEach((record, i) => {
            const refusal = refusedRecords.get(record);
            const delivery = deliveries[i] as Delivery;
            if (refusal === undefined || rejected.has(delivery)) return;
            rejected.set(delivery, unwritable(component, delivery.envelope, describeRecordRefusal(refusal, record.value.byteLength), refusal.error));
            ctx.counters.count('kafka.messages.rejected', { bridge: ctx.bridge });
          });
        }
      }
      return rejected;
    };
    return (input) => {
      // An idempotent producer is kept across failed writes, disconnected and connected again:
      // its producer id and sequence numbers are what lets Kafka drop a batch sent again that it
      // had appended (its answer lost as a broker died), and the failed batch goes again first, as
      // it went (see Resend). A new producer for each try wrote such a batch twice.
      let kept: ReturnType<typeof createKafkaProducer> | undefined;
      let closing: Promise<void> = Promise.resolve();
      const resend = new Resend();
      return resourceSink(
        config,
        async () => {
          await closing;
          const producer = config.idempotent ? (kept ??= createKafkaProducer(producerOptions)) : createKafkaProducer(producerOptions);
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
          const closed = producer.disconnect().catch((error: unknown) => ctx.logger.warn({ err: error }, `${component}: disconnect failed`));
          if (producer === kept) closing = closed;
        },
        async (producer, batch) => {
          const rejected = new Map<Delivery, Error>();
          const { parts, renew } = resend.plan(batch);
          if (renew) {
            await producer.renewProducerId().catch((error: unknown) => {
              throw wrapError('UPSTREAM_UNAVAILABLE', `${component}: cannot renew the producer id at ${config.brokers.join(',')}`, error, {
                component,
                bridge: ctx.bridge,
                retryable: true,
              });
            });
            resend.written();
          }
          for (const part of parts) {
            try {
              for (const [delivery, error] of await writeBatch(producer, part)) rejected.set(delivery, error);
            } catch (error) {
              if (config.idempotent) resend.failed(part);
              throw error;
            }
          }
          resend.written();
          return { rejected };
        },
        ctx.tracing,
      )(input);
    };
  },
};

/**
 * How long the records of a topic Kafka refused are refused without asking it (each ask costs
 * kafkajs' retries); a topic created or allowed meanwhile is written at most this long after.
 */
const REFUSAL_MEMORY_MS = 60_000;
const NO_REFUSALS: ReadonlyMap<string, TopicRefusal> = new Map();

/** Kafka errors that no retry can fix: the message or topic itself is refused. */
const PERMANENT = new Set(['MESSAGE_TOO_LARGE', 'INVALID_TOPIC_EXCEPTION', 'CORRUPT_MESSAGE', 'INVALID_RECORD', 'RECORD_LIST_TOO_LARGE', 'UNSUPPORTED_FOR_MESSAGE_FORMAT']);

function isPermanent(error: unknown): boolean {
  for (let e: unknown = error, depth = 0; e !== undefined && e !== null && depth < 5; depth++) {
    const type = (e as { type?: unknown }).type;
    if (typeof type === 'string' && PERMANENT.has(type)) return true;
    e = (e as { originalError?: unknown; cause?: unknown }).originalError ?? (e as { cause?: unknown }).cause;
  }
  return false;
}
