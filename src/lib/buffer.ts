/**
 * The durable buffer as an operator, for use outside the gateway:
 * `import { durableBuffer } from 'ferry/buffer'`. The same SQLite store-and-forward log the
 * gateway keeps every bridge's messages in (group commit, one cursor, dead letters).
 */
import { mkdirSync, realpathSync } from 'node:fs';
import { resolve } from 'node:path';
import { Observable } from 'rxjs';
import { z } from 'zod';
import { bufferPolicySchema, bufferSettingsSchema } from '../buffer/config.ts';
import { openBuffer } from '../buffer/open.ts';
import { cursorSource } from '../buffer/reader.ts';
import { BufferWriter } from '../buffer/writer.ts';
import type { Delivery } from '../core/delivery.ts';
import { FerryError } from '../core/errors.ts';
import type { DeliveryOperator } from '../core/stream.ts';
import { type StreamOptions, contextFor, validated } from './component.ts';
import { lazySchema } from '../core/lazy-schema.ts';

export type { Delivery } from '../core/delivery.ts';
export type { Envelope } from '../core/envelope.ts';
export type { DeliveryOperator, Sink, SinkEvent, Source } from '../core/stream.ts';
export type { StreamOptions } from './component.ts';

const schema = lazySchema(() =>
  z.strictObject({
    dir: z.string().min(1).meta({ description: 'Directory of the buffer file (`buffer.db`); created when missing.' }),
    name: z.string().min(1).default('library').meta({
      description:
        "The log's name in the file, read by one subscription at a time (like a bridge): a second subscription to the same dir and name in the process errors with CONFIG_INVALID until the first unsubscribes; keep other processes off it too.",
    }),
    synchronous: bufferSettingsSchema().shape.synchronous,
    maxBatch: bufferSettingsSchema().shape.maxBatch,
    maxBatchBytes: bufferSettingsSchema().shape.maxBatchBytes,
    commitDelayMs: bufferSettingsSchema().shape.commitDelayMs,
    policy: bufferPolicySchema().default(bufferPolicySchema().parse({})).meta({ description: "The log's limits, overflow, retries and dead letters: a bridge's `buffer:`." }),
  }),
);

/** The options of `durableBuffer`: where, and a bridge's `buffer:` policy (docs/reference/bridge.md). */
export type DurableBufferConfig = z.input<ReturnType<typeof schema>>;

/** The one reader of a library buffer's log. */
const CURSOR = 'downstream';

/**
 * The logs subscribed in this process, by file and name. Module state: what it guards is the
 * process's (two subscriptions to one log both read it from the same cursor, so each message
 * went downstream twice), and an entry lives only while its subscription does.
 */
const subscribed = new Set<string>();

/**
 * Store-and-forward on a SQLite file: each delivery from upstream is appended to the log and
 * acked upstream after the group commit that made it durable (so an MQTT broker gets its
 * PUBACK only then); downstream gets deliveries read from the log through a cursor, which
 * moves past a message once downstream acked it. A nacked one is delivered again after a
 * backoff (for ever when retryable; a permanent failure dead-letters it). Messages survive a
 * crash or restart: on the next subscribe, what was not acked is delivered again. Upstream
 * completing does not complete the output, which keeps delivering what the log holds until
 * it is unsubscribed; unsubscribing commits what is pending and closes the file.
 */
export function durableBuffer(config: DurableBufferConfig, options: StreamOptions = {}): DeliveryOperator {
  const parsed = validated('durableBuffer', schema(), config);
  const dir = resolve(parsed.dir);
  return (input) =>
    new Observable<Delivery>((subscriber) => {
      const ctx = contextFor({ ...options, name: options.name ?? parsed.name }, dir);
      // By the directory's real path (opening creates it anyway): another spelling of it is the same file.
      mkdirSync(dir, { recursive: true });
      const log = `${realpathSync(dir)}\0${parsed.name}`;
      if (subscribed.has(log)) {
        subscriber.error(
          new FerryError(
            'CONFIG_INVALID',
            `durableBuffer '${parsed.name}' in ${dir} is already subscribed in this process: a log has one reader at a time; unsubscribe the other first, or give this one another name`,
            { component: `durableBuffer '${parsed.name}'` },
          ),
        );
        return;
      }
      const { store } = openBuffer(dir, ctx.logger);
      subscribed.add(log);
      const writer = new BufferWriter(
        store,
        { synchronous: parsed.synchronous, maxBatch: parsed.maxBatch, maxBatchBytes: parsed.maxBatchBytes, commitDelayMs: parsed.commitDelayMs },
        ctx.logger,
        ctx.counters,
      );
      store.addSinks(parsed.name, [CURSOR]);
      writer.setPolicy(parsed.name, parsed.policy);
      const reader = cursorSource({ store, writer, bridge: parsed.name, sink: CURSOR, policy: parsed.policy, logger: ctx.logger, counters: ctx.counters });
      const output = reader.deliveries.subscribe(subscriber);
      const upstream = input.subscribe({
        next: (delivery) => writer.enqueue(parsed.name, delivery),
        error: (error: unknown) => subscriber.error(error),
      });
      return () => {
        upstream.unsubscribe();
        reader.stop();
        output.unsubscribe();
        writer.close();
        store.close();
        subscribed.delete(log);
      };
    });
}
