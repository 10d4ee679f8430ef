import { Observable } from 'rxjs';
import { z } from 'zod';
import { pipelinedSink } from '../core/pipelined-sink.ts';
import type { ComponentContext, SinkComponent } from '../core/component.ts';
import { isFerryError } from '../core/errors.ts';
import type { Sink, SinkEvent } from '../core/stream.ts';
import { compileTemplate, refineTemplate } from '../core/template.ts';
import { type PoolSettings, connectionFields, poolSettings, refineConnection, connectionFiles, replyTimeoutMs } from './connection.ts';
import { type TableName, describeTable, identifierProblem, parseTableName, identifierSchema as identifier, tableNameSchema } from './identifiers.ts';
import { PipelinedInserts, type PipelinedInsertsOptions } from './pipelined-inserts.ts';
import { type PostgresPools, processPools } from './pools.ts';
import { InsertPlans } from './insert-plans.ts';
import type { TableMapping } from './table.ts';
import { lazySchema } from '../core/lazy-schema.ts';
import { MAX_TIMER_MESSAGE, MAX_TIMER_MS } from '../core/timer-limit.ts';

const schema = lazySchema(() =>
  z
    .strictObject({
      ...connectionFields(),
      table: tableNameSchema.meta({
        description:
          'The table the rows go to: `table` (found through the search path) or `schema.table`. Names are letters, digits and `_`, matched exactly (they are quoted). Its columns and their types are read when the sink starts.',
        examples: ['public.readings'],
      }),
      columns: z
        .record(
          identifier,
          z.string().superRefine((source, ctx) => {
            refineTemplate(source, ctx);
          }),
          // A key's own issue would be reported as "Invalid key in record"; say why instead.
          { error: (issue) => (issue.code === 'invalid_key' ? `column '${String(issue.input)}': ${identifierProblem(String(issue.input)) ?? 'invalid name'}` : undefined) },
        )
        .refine((columns) => Object.keys(columns).length > 0, 'map at least one column')
        .meta({
          description:
            "Column name to message template. A template that is one field gives its value with its type: `${id}` (the message's id: a UUIDv7, or a UUIDv5 made from an outbox row), `${timestamp}` (arrival, in ms: a time for timestamptz), `${payload}` (the payload: jsonb, json, bytea or text), `${payload.a.b}` (a JSON value: numbers for integer and numeric columns, booleans, objects for jsonb), or NULL when the message has none; anything else renders as text. The value is converted to the column's type; a message whose value does not fit goes to the dead letters.",
          examples: [{ id: '${id}', device: '${1}', received_at: '${timestamp}', body: '${payload}' }],
        }),
      onConflict: z
        .enum(['ignore', 'update'])
        .default('ignore')
        .meta({
          description:
            'When a row with the same conflict key is already there (a message delivered again): `ignore` adds nothing; `update` sets the other mapped columns to the new values.',
          examples: ['update'],
        }),
      conflictColumns: z
        .array(identifier)
        .min(1)
        .optional()
        .meta({
          description: 'The conflict key: mapped columns with a unique index or constraint over exactly them. The column mapped to `${id}` when absent.',
          examples: [['device']],
        }),
      batchSize: z
        .int()
        .min(1)
        .default(500)
        .meta({ description: 'Most messages in one insert.', examples: [500] }),
      batchBytes: z
        .int()
        .min(1)
        .default(1024 * 1024)
        .meta({ description: 'Most payload bytes in one insert (a larger message goes alone).', examples: [1048576] }),
      batchTimeMs: z
        .int()
        .min(0)
        .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
        .default(10)
        .meta({ description: 'Longest a message waits for its batch, in milliseconds.', examples: [10] }),
      concurrency: z
        .int()
        .min(1)
        .max(16)
        .default(4)
        .meta({
          description:
            "Most batches in flight at once. They go through one connection, each batch's insert sent as soon as the batch is formed, without waiting for the replies to the ones before; the server runs them in order, in transactions of about half this many batches (more while the one before is slow to commit), each committed after the one before it. A batch is acked after its transaction committed; when a statement fails, its transaction and the batches after it are written again one batch at a time, in order. 1 sends a batch only after the one before it committed.",
          examples: [4],
        }),
    })
    .superRefine((config, ctx) => {
      refineConnection(config, ctx);
      const columns = Object.keys(config.columns);
      if (config.conflictColumns === undefined) {
        if (idColumn(config.columns) === undefined) {
          ctx.addIssue({
            code: 'custom',
            path: ['columns'],
            message: "map a column to ${id} (the message's id, with a unique index) or list conflictColumns: a message delivered again must find the row it already wrote",
          });
        }
      } else {
        config.conflictColumns.forEach((column, i) => {
          if (!columns.includes(column))
            ctx.addIssue({ code: 'custom', path: ['conflictColumns', i], message: `'${column}' is not one of the mapped columns (${columns.join(', ')})` });
        });
      }
      const target = conflictTarget(config);
      if (config.onConflict === 'update' && target.length > 0 && columns.every((c) => target.includes(c))) {
        ctx.addIssue({
          code: 'custom',
          path: ['onConflict'],
          message: 'update sets the mapped columns besides the conflict key, and there are none: use ignore, or map more columns',
        });
      }
    }),
);

export type PostgresSinkConfig = z.output<ReturnType<typeof schema>>;

/** The first column mapped to exactly `${id}`. */
function idColumn(columns: Readonly<Record<string, string>>): string | undefined {
  for (const [column, source] of Object.entries(columns)) {
    try {
      if (compileTemplate(source).single?.kind === 'id') return column;
    } catch {
      // reported by the column's own check
    }
  }
  return undefined;
}

function conflictTarget(config: Pick<PostgresSinkConfig, 'columns' | 'conflictColumns'>): string[] {
  if (config.conflictColumns !== undefined) return [...config.conflictColumns];
  const id = idColumn(config.columns);
  return id === undefined ? [] : [id];
}

/**
 * Writes messages as rows of a table: one `INSERT ... SELECT FROM unnest(...) ON CONFLICT`
 * per batch, acked once it committed; up to `concurrency` batches in flight, pipelined on one
 * connection (`PipelinedInserts`). The table's columns are read when the sink starts; a
 * mapping that cannot fit (no such table or column, no privilege, no unique index for the
 * conflict key) stops the sink with an error naming the bridge, and its messages stay
 * buffered. A message whose value does not fit its column is nacked alone as MESSAGE_INVALID
 * (dead-lettered), and the rest of its batch is written, unless the table's columns changed
 * since they were read: the refusal has them read again (`InsertPlans`), and the batch is
 * written by the new types.
 */
export const postgresSink: SinkComponent<ReturnType<typeof schema>> = {
  kind: 'postgres',
  description: 'Writes messages as rows of a PostgreSQL table.',
  get schema() {
    return schema();
  },
  templates: (config) => Object.entries(config.columns).map(([column, template]) => ({ path: ['columns', column], template })),
  files: (config) => connectionFiles(config),
  create: (config, ctx) => createPostgresSink(config, ctx),
};

/** The sink, with the pools it takes its connections from (the process's, unless a test gives its own). */
export function createPostgresSink(config: PostgresSinkConfig, ctx: ComponentContext, pools: PostgresPools = processPools): Sink {
  const component = `postgres sink of bridge '${ctx.bridge}'`;
  const table = (parseTableName(config.table) as { table: TableName }).table;
  const mapping: TableMapping = { table, columns: Object.keys(config.columns), conflictColumns: conflictTarget(config), onConflict: config.onConflict };
  const writerOptions: PipelinedInsertsOptions = {
    component,
    bridge: ctx.bridge,
    table: describeTable(table),
    onConflict: config.onConflict,
    templates: Object.values(config.columns).map((source) => compileTemplate(source)),
    sourceFilters: ctx.sourceFilters ?? [],
    concurrency: config.concurrency,
    // As long as pg waits for a reply on the pool's other connections (query_timeout).
    replyTimeoutMs: replyTimeoutMs(config),
    counters: ctx.counters,
    logger: ctx.logger,
  };

  return (input) =>
    new Observable<SinkEvent>((subscriber) => {
      let settings: PoolSettings;
      try {
        settings = poolSettings(config, applicationName(ctx), ctx.configDir ?? '.', component);
      } catch (error) {
        subscriber.error(error);
        return undefined;
      }
      const lease = pools.acquire(settings, (error) => {
        ctx.counters.count('postgres.pool.errors', { bridge: ctx.bridge });
        ctx.logger.warn({ err: error }, `${component}: an idle connection to ${settings.description} failed; the pool opens a new one when needed`);
      });

      const plans = new InsertPlans({
        component,
        bridge: ctx.bridge,
        table: config.table,
        server: settings.description,
        mapping,
        pool: () => lease.pool,
        firstReplyMs: config.connectTimeoutMs,
        stop: (error) => subscriber.error(error),
        counters: ctx.counters,
        logger: ctx.logger,
      });
      // At once, so that a mapping that cannot fit is reported at startup; a server that is
      // down is tried again by the first batch.
      plans.current().catch((error: unknown) => ctx.logger.debug({ err: error }, `${component}: not ready yet`));

      const writer = new PipelinedInserts(() => lease.pool, plans, writerOptions);
      const sink = pipelinedSink(
        config,
        async (batch) => {
          const staged = writer.stage(await plans.current(), batch);
          return {
            commit: () =>
              staged.commit().catch((error: unknown) => {
                // The table changed under the sink: read it again before the next attempt.
                if (isFerryError(error, 'CONFIG_INVALID')) plans.forget();
                throw error;
              }),
            abort: () => staged.abort(),
          };
        },
        ctx.tracing,
      );
      const subscription = sink(input).subscribe(subscriber);
      return () => {
        subscription.unsubscribe();
        writer.close();
        const released = lease.release();
        ctx.afterStop?.(released);
      };
    });
}

/** `application_name` of the connections: the gateway's name (the logger's `name`), else "ferry". */
function applicationName(ctx: ComponentContext): string {
  const name = (ctx.logger.bindings() as { name?: unknown }).name;
  return typeof name === 'string' && name !== '' ? name : 'ferry';
}
