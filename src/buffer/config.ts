import { z } from 'zod';
import { lazySchema } from '../core/lazy-schema.ts';
import { MAX_TIMER_MESSAGE, MAX_TIMER_MS } from '../core/timer-limit.ts';

/** Per-bridge buffer limits and what to do when they are reached. */
export const bufferPolicySchema = lazySchema(() =>
  z
    .strictObject({
      maxMessages: z
        .int()
        .min(1)
        .default(1_000_000)
        .meta({ description: 'Most messages the bridge may hold on disk.', examples: [1000000] }),
      maxBytes: z
        .int()
        .min(1)
        .default(256 * 1024 * 1024)
        .meta({
          description:
            "Most payload bytes the bridge may hold on disk. A message larger than this could never be stored: it goes to the bridge's dead letters (`bridge.messages.rejected{reason=too_large}`), whatever `overflow` says.",
          examples: [268435456],
        }),
      maxAgeMs: z
        .int()
        .min(0)
        .default(0)
        .meta({
          description: 'Messages buffered longer than this are removed from the front of the log, in the order they came, and counted as expired; 0 keeps them until delivered.',
          examples: [604800000],
        }),
      overflow: z
        .enum(['refuse', 'drop-oldest', 'drop-newest'])
        .default('refuse')
        .meta({
          description:
            'When full: `refuse` stops acknowledging new messages so devices keep them (no loss); `drop-oldest` deletes the oldest buffered messages; `drop-newest` acknowledges and drops the new message. Every drop is counted and logged.',
          examples: ['drop-oldest'],
        }),
      replay: z
        .enum(['fifo', 'live-first'])
        .default('fifo')
        .meta({
          description:
            '`fifo`: each sink gets messages in arrival order. `live-first`: when a sink is more than one window behind (after an outage), new messages go first and the backlog drains behind them at backlogRatePerSec; per-device order then holds within each of the two streams, not across them.',
          examples: ['live-first'],
        }),
      backlogRatePerSec: z
        .int()
        .min(1)
        .default(1000)
        .meta({
          description: 'Under live-first replay, the most backlog messages per second a sink is handed.',
          examples: [500],
        }),
      maxDeadLetters: z
        .int()
        .min(0)
        .default(100_000)
        .meta({
          description:
            'Most dead letters the bridge keeps; beyond it the oldest are deleted (checked every 10 seconds), counted as buffer.dead_letters.dropped and logged, so a flood of bad messages cannot fill the disk.',
          examples: [100000],
        }),
      windowSize: z
        .int()
        .min(1)
        .default(1000)
        .meta({ description: 'Most messages a sink is handed before its cursor moves.', examples: [1000] }),
      retryInitialMs: z
        .int()
        .min(1)
        .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
        .default(200)
        .meta({ description: 'First wait before a failed write is tried again; doubles up to retryMaxMs.', examples: [200] }),
      retryMaxMs: z
        .int()
        .min(1)
        .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
        .default(30_000)
        .meta({ description: 'Longest wait between retries of a failed write; retries go on for ever.', examples: [30000] }),
    })
    .meta({ description: 'Durable buffer of this bridge: every message is on disk before its device is acknowledged.' }),
);

export type BufferPolicy = z.output<ReturnType<typeof bufferPolicySchema>>;

/** Gateway-wide settings of the buffer database. */
export const bufferSettingsSchema = lazySchema(() =>
  z
    .strictObject({
      synchronous: z
        .enum(['full', 'normal'])
        .default('full')
        .meta({
          description: '`full`: a commit is on disk before devices are acknowledged (survives power loss); `normal`: survives process crashes only.',
          examples: ['full'],
        }),
      // 1,000: a flood commits within the turn that reads it instead of at its end, so that its
      // messages die young instead of being promoted and collected as old (docs/benchmarks.md).
      maxBatch: z
        .int()
        .min(1)
        .default(1000)
        .meta({ description: 'Most messages in one group commit.', examples: [1000] }),
      maxBatchBytes: z
        .int()
        .min(1)
        .default(8 * 1024 * 1024)
        .meta({ description: 'Most payload bytes in one group commit.', examples: [8388608] }),
      commitDelayMs: z
        .int()
        .min(0)
        .max(1000)
        .default(0)
        .meta({
          description:
            'Least time between the starts of two group commits, in milliseconds: a message arriving sooner after a commit waits the rest of it for the messages that follow, and all share one commit. Fewer commits (each an fsync) for up to this much more latency before the PUBACK, only while messages come faster than one per interval; 0 commits at the next turn of the event loop. About a quarter less CPU at a steady 500-2,000 msgs/s with 10, but more at 100 msgs/s from 50 devices, where there is little to share a commit with (docs/benchmarks.md, Steady load).',
          examples: [10],
        }),
    })
    .meta({ description: 'The durable buffer (SQLite, in the data directory).' }),
);

export type BufferSettings = z.output<ReturnType<typeof bufferSettingsSchema>>;
