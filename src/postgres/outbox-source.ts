import { Observable } from 'rxjs';
import { z } from 'zod';
import type { ComponentContext, SourceComponent } from '../core/component.ts';
import type { Delivery } from '../core/delivery.ts';
import type { Source } from '../core/stream.ts';
import { connectionFields, poolSettings, refineConnection, connectionFiles } from './connection.ts';
import { parseTableName, type TableName, identifierSchema as identifier, tableNameSchema } from './identifiers.ts';
import { OutboxReading } from './outbox-reading.ts';
import { type PostgresPools, processPools } from './pools.ts';
import { lazySchema } from '../core/lazy-schema.ts';
import { MAX_TIMER_MESSAGE, MAX_TIMER_MS } from '../core/timer-limit.ts';

const schema = lazySchema(() =>
  z
    .strictObject({
      ...connectionFields(),
      table: tableNameSchema.meta({
        description:
          'The outbox table: `table` or `schema.table`, written by a backend, one row per message. Rows are read in the order of `idColumn`; several gateways can read one outbox (each row goes to one of them).',
        examples: ['public.device_commands'],
      }),
      idColumn: identifier.default('id').meta({
        description: 'The column that orders the rows (a `bigserial` or `bigint identity` primary key): read in its order, and deleted or marked by it.',
        examples: ['id'],
      }),
      payloadColumn: identifier.default('payload').meta({
        description: "The message's payload: jsonb or json (its JSON text), text (UTF-8), or bytea (the bytes).",
        examples: ['payload'],
      }),
      topicColumn: identifier.optional().meta({ description: "A text column with each message's topic; the table's name (as configured) when absent.", examples: ['topic'] }),
      keyColumn: identifier
        .optional()
        .meta({ description: "A text column with each message's key (`${key}` in the sink's templates, such as the device id); none when absent.", examples: ['device'] }),
      headersColumn: identifier.optional().meta({
        description: "A jsonb column with each message's headers, an object of strings (`${header.NAME}`); none when absent.",
        examples: ['headers'],
      }),
      delivered: z
        .enum(['delete', 'mark'])
        .default('delete')
        .meta({
          description:
            'What happens to a row once every sink acked its message: `delete` removes it; `mark` sets `markColumn` to the time, and rows whose mark is set are not read again.',
          examples: ['delete'],
        }),
      markColumn: identifier.optional().meta({ description: 'With `delivered: mark`: a timestamptz column, NULL until the row was delivered.', examples: ['delivered_at'] }),
      channel: identifier.optional().meta({
        description:
          "The LISTEN channel a backend NOTIFYs after writing rows (a trigger, or `NOTIFY channel` in its transaction): the outbox is read at once. The table's name when absent. Reading also polls every `pollIntervalMs`, so nothing waits longer than that without a notification.",
        examples: ['device_commands'],
      }),
      pollIntervalMs: z
        .int()
        .min(10)
        .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
        .default(5000)
        .meta({ description: 'How often the outbox is read when no notification came.', examples: [5000] }),
      listenHeartbeatMs: z
        .int()
        .min(100)
        .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
        .default(15_000)
        .meta({
          description:
            'How often the LISTEN connection is asked a `SELECT 1`. One that has not answered by the next is given up, and LISTEN runs again on a new connection: a network cut off, which tells neither end, is noticed within twice this (TCP would take hours), and once the path is back notifications wake reading at once again, instead of the poll alone.',
          examples: [15000],
        }),
      batchSize: z
        .int()
        .min(1)
        .max(10_000)
        .default(100)
        .meta({ description: 'Most rows read (and locked) by one transaction.', examples: [100] }),
      maxBatches: z
        .int()
        .min(1)
        .max(50)
        .default(2)
        .meta({
          description:
            'Most batches in flight at once, each an open transaction on its own connection (keep it below `poolSize`: the LISTEN takes one more). A batch commits when every row of it was settled, so a message that waits long for its sink (a command for an offline device) holds its batch, not the others.',
          examples: [2],
        }),
      retryBackoffMs: z
        .int()
        .min(1)
        .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
        .default(1000)
        .meta({
          description:
            'Wait before rows a sink refused are read again (and before a reconnect); doubles per attempt up to 60 s. A row refused for good is delivered again by itself this long after, once, then deleted (or marked) if refused again.',
          examples: [1000],
        }),
      stopTimeoutMs: z
        .int()
        .min(0)
        .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
        .default(2000)
        .meta({ description: 'On stop, how long to wait for messages in flight to be acked before their batches commit; the rest stay in the outbox.', examples: [2000] }),
    })
    .superRefine((config, ctx) => {
      refineConnection(config, ctx);
      if (config.delivered === 'mark' && config.markColumn === undefined)
        ctx.addIssue({ code: 'custom', path: ['markColumn'], message: '`delivered: mark` needs `markColumn`, the timestamptz column set when a row was delivered' });
      if (config.delivered === 'delete' && config.markColumn !== undefined)
        ctx.addIssue({ code: 'custom', path: ['markColumn'], message: '`markColumn` is used only with `delivered: mark`' });
      if (config.maxBatches >= config.poolSize)
        ctx.addIssue({
          code: 'custom',
          path: ['maxBatches'],
          message: `\`maxBatches\` (${config.maxBatches}) must be below \`poolSize\` (${config.poolSize}): the LISTEN connection takes one`,
        });
    }),
);

export type PostgresSourceConfig = z.output<ReturnType<typeof schema>>;

/**
 * Messages from an outbox table: a backend inserts rows, Ferry reads them in id order with
 * `FOR UPDATE SKIP LOCKED` (so gateways sharing the outbox never take the same row), hands
 * them to the bridge's sinks, and deletes or marks each row in the transaction that read it,
 * which commits once every row of the batch was settled. A row nacked, or in flight when the
 * gateway stopped or crashed, stays and is read again (but one refused for good, again when
 * delivered by itself, is settled: see OutboxBatch): delivery is at least once, and a row read
 * again has the id it had (outboxRowId), so sinks and devices can tell it from a new message.
 */
export const postgresSource: SourceComponent<ReturnType<typeof schema>> = {
  kind: 'postgres',
  description: 'Messages from a PostgreSQL outbox table, read in id order (FOR UPDATE SKIP LOCKED), deleted or marked once acked; woken by LISTEN/NOTIFY.',
  get schema() {
    return schema();
  },
  keepsMessages: true,
  files: (config) => connectionFiles(config),
  create: (config, ctx) => createPostgresSource(config, ctx),
};

export function createPostgresSource(config: PostgresSourceConfig, ctx: ComponentContext, pools: PostgresPools = processPools): Source {
  const component = `postgres source of bridge '${ctx.bridge}'`;
  const table = (parseTableName(config.table) as { table: TableName }).table;
  return new Observable<Delivery>((subscriber) => {
    let reading: OutboxReading;
    try {
      const settings = poolSettings(config, applicationName(ctx), ctx.configDir ?? '.', component);
      reading = new OutboxReading({ config, table, component, ctx, settings, pools, subscriber });
    } catch (error) {
      subscriber.error(error);
      return undefined;
    }
    reading.start();
    return () => {
      const stopped = reading.stop();
      ctx.afterStop?.(stopped);
    };
  });
}

function applicationName(ctx: ComponentContext): string {
  const name = (ctx.logger.bindings() as { name?: unknown }).name;
  return typeof name === 'string' && name !== '' ? name : 'ferry';
}
