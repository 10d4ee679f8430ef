import { z } from 'zod';
import { resourceSink } from '../core/batching-sink.ts';
import type { ComponentContext, SinkComponent } from '../core/component.ts';
import { wrapError } from '../core/errors.ts';
import { HistoryWriter, convertEarlierHistory, historyPath } from './history-store.ts';
import { walSyncFailure } from './wal-sync.ts';
import { markCorruptHistory, recoverMarkedHistory } from './history-recovery.ts';
import { lazySchema } from '../core/lazy-schema.ts';
import { MAX_TIMER_MESSAGE, MAX_TIMER_MS } from '../core/timer-limit.ts';

const schema = lazySchema(() =>
  z.strictObject({
    keep: z
      .int()
      .min(1)
      .default(100_000)
      .meta({ description: 'How many of the newest messages of this bridge to keep.', examples: [100000] }),
    synchronous: z
      .enum(['full', 'normal'])
      .default('full')
      .meta({
        description: '`full`: a message is acknowledged only after it is on disk (survives power loss); `normal`: survives process crashes, faster.',
        examples: ['full'],
      }),
    batchSize: z
      .int()
      .min(1)
      .default(1000)
      .meta({ description: 'Most messages written in one transaction.', examples: [1000] }),
    batchTimeMs: z
      .int()
      .min(0)
      .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
      .default(2)
      .meta({ description: 'Longest a message waits for its transaction, in milliseconds.', examples: [2] }),
  }),
);

/** Writes messages to the gateway's local history (SQLite), acking after the commit (synced to disk under `full`). */
export const historySink: SinkComponent<ReturnType<typeof schema>> = {
  kind: 'history',
  description: "The gateway's local message history in SQLite (see `ferry history`).",
  get schema() {
    return schema();
  },
  create: (config, ctx) =>
    resourceSink(
      config,
      async () => {
        // Opening can fail too (a damaged file, a full disk): the same retryable error as a write.
        try {
          if ((await recoverMarkedHistory(ctx.dataDir, ctx.logger, ctx.counters)) === 'busy') {
            ctx.restartNeeded?.('the history database is corrupt and another bridge writes to it');
            throw new Error('the history database is corrupt and another bridge writes to it: it is moved aside at the next start');
          }
          const converted = await convertEarlierHistory(ctx.dataDir, (messages) =>
            ctx.logger.info({ bridge: ctx.bridge, messages }, 'history: converting the history of an earlier version of Ferry (a row a message) into packs'),
          );
          if (converted !== undefined) ctx.logger.info({ bridge: ctx.bridge, ...converted }, 'history: converted into packs');
          return new HistoryWriter(ctx.dataDir, config.synchronous);
        } catch (error) {
          storageFailed(ctx, error);
          throw wrapError('STORAGE_FAILED', `history sink of bridge '${ctx.bridge}': cannot open the history database`, error, {
            component: 'history sink',
            bridge: ctx.bridge,
            retryable: true,
          });
        }
      },
      (writer) => writer.close(),
      async (writer, batch) => {
        try {
          await writer.append(
            ctx.bridge,
            batch.map((d) => d.envelope),
            config.keep,
          );
        } catch (error) {
          storageFailed(ctx, error);
          throw wrapError('STORAGE_FAILED', `history sink of bridge '${ctx.bridge}': write failed`, error, {
            component: 'history sink',
            bridge: ctx.bridge,
            retryable: true,
          });
        }
      },
      ctx.tracing,
    ),
};

/**
 * An open or a write of the history failed. After a failed sync it is not written again in this
 * process (WalSync): the gateway is asked to restart, which recovers it. A corrupt file is marked,
 * so that the sink's next try checks it (history-recovery.ts).
 */
function storageFailed(ctx: ComponentContext, error: unknown): void {
  const failure = walSyncFailure(historyPath(ctx.dataDir));
  if (failure !== undefined) ctx.restartNeeded?.(`the disk failed to sync the history (${failure.message})`);
  markCorruptHistory(ctx.dataDir, error, `the history sink of bridge '${ctx.bridge}'`, ctx.logger);
}
