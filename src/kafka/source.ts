import { z } from 'zod';
import { MAX_TIMER_MESSAGE, MAX_TIMER_MS } from '../core/timer-limit.ts';
import type { SourceComponent } from '../core/component.ts';
import { createKafkaConsumer } from './client.ts';
import { kafkaConnectionFields } from './connection-fields.ts';
import { consumeKafka } from './consumption.ts';
import { lazySchema } from '../core/lazy-schema.ts';

const topic = z.string().regex(/^[A-Za-z0-9._-]{1,249}$/, 'a Kafka topic is 1 to 249 letters, digits, ".", "_" or "-"');

const schema = lazySchema(() => {
  const connection = kafkaConnectionFields('Request timeout.');
  return z
    .strictObject({
      brokers: connection.brokers,
      groupId: z
        .string()
        .min(1)
        .meta({ description: 'Consumer group: its committed offsets say where reading resumes.', examples: ['ferry-site-7-commands'] }),
      topics: z
        .array(topic)
        .min(1)
        .meta({ description: 'Kafka topics to read.', examples: [['ferry.commands']] }),
      clientId: z
        .string()
        .min(1)
        .default('ferry')
        .meta({ description: 'Kafka client id.', examples: ['ferry-site-7'] }),
      fromBeginning: z
        .boolean()
        .default(false)
        .meta({ description: 'Where a group without committed offsets starts: the oldest message (`true`) or new messages only (`false`).', examples: [false] }),
      maxInFlight: z
        .int()
        .min(1)
        .default(1000)
        .meta({
          description:
            'Most messages of one partition taken but not yet committable (one unacked message holds back the commit of those after it); the partition pauses when its window is full.',
          examples: [1000],
        }),
      retryBackoffMs: z
        .int()
        .min(1)
        .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
        .default(1000)
        .meta({ description: 'Wait before a message a sink refused (retryably) is delivered again; doubles per attempt up to 60 s.', examples: [1000] }),
      stopTimeoutMs: z
        .int()
        .min(0)
        .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
        .default(2000)
        .meta({ description: 'On stop, how long to wait for messages in flight to be acked before the last commit; the rest is read again on the next start.', examples: [2000] }),
      sessionTimeoutMs: z
        .int()
        .min(1000)
        .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
        .default(30000)
        .meta({ description: 'Group session timeout: a member silent this long loses its partitions.', examples: [30000] }),
      heartbeatIntervalMs: z
        .int()
        .min(100)
        .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
        .default(3000)
        .meta({ description: 'Group heartbeat interval (well below sessionTimeoutMs).', examples: [3000] }),
      maxWaitTimeMs: z
        .int()
        .min(10)
        .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
        .default(500)
        .meta({
          description: 'Longest a fetch waits for new messages; also how soon a partition paused for a full window is read again.',
          examples: [500],
        }),
      connectionTimeoutMs: connection.connectionTimeoutMs,
      requestTimeoutMs: connection.requestTimeoutMs,
    })
    .refine((c) => c.heartbeatIntervalMs < c.sessionTimeoutMs, {
      message: '`heartbeatIntervalMs` must be below `sessionTimeoutMs`: a member must heartbeat within its session',
      path: ['heartbeatIntervalMs'],
    });
});

export type KafkaSourceConfig = z.output<ReturnType<typeof schema>>;

/**
 * Messages of Kafka topics, read in a consumer group. Offsets are committed only for
 * messages every sink acked, and never past an unacked one: a message is read again after
 * a restart or rebalance until it is acked. A message a sink refuses for good is logged,
 * counted as `kafka.messages.invalid` and committed past, so it cannot stall its partition.
 */
export const kafkaSource: SourceComponent<ReturnType<typeof schema>> = {
  kind: 'kafka',
  description: 'Messages of Kafka topics, read in a consumer group; offsets are committed after every sink acked.',
  get schema() {
    return schema();
  },
  keepsMessages: true,
  create: (config, ctx) => consumeKafka(config, ctx, () => createKafkaConsumer({ ...config, logger: ctx.logger })),
};
