import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import { bufferPolicySchema, bufferSettingsSchema, type BufferPolicy, type BufferSettings } from '../../src/buffer/config.ts';
import { openBuffer } from '../../src/buffer/open.ts';
import { cursorSource } from '../../src/buffer/reader.ts';
import { BufferWriter } from '../../src/buffer/writer.ts';
import type { Delivery } from '../../src/core/delivery.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';

const logger = pino({ level: 'silent' });

/**
 * A buffer (store and group-commit writer) in a new directory of `tempDir` for each call of the
 * function returned: bridge `b` with `sinks` under `policy` (retries after 10-50 ms).
 */
export function bufferSetup(tempDir: () => string) {
  return (policy: Partial<BufferPolicy> = {}, sinks = ['out'], settings: Partial<BufferSettings> = {}) => {
    const dir = tempDir();
    const counters = new CounterRegistry();
    const { store } = openBuffer(dir, logger);
    const writer = new BufferWriter(store, bufferSettingsSchema().parse(settings), logger, counters);
    const fullPolicy = bufferPolicySchema().parse({ retryInitialMs: 10, retryMaxMs: 50, ...policy });
    store.registerBridge('b', sinks);
    writer.setPolicy('b', fullPolicy);
    const readers: { stop(): void }[] = [];
    /** Runs a sink over one sink's cursor; `decide` acks (undefined) or nacks (an Error) each message. */
    const drain = (sink: string, decide: (d: Delivery) => Error | undefined = () => undefined) => {
      const seen: string[] = [];
      const reader = cursorSource({ store, writer, bridge: 'b', sink, policy: fullPolicy, logger, counters });
      readers.push({ stop: () => subscription.unsubscribe() });
      const subscription = reader.deliveries.subscribe((d) => {
        seen.push(Buffer.from(d.envelope.payload).toString());
        const error = decide(d);
        if (error === undefined) d.ack();
        else d.nack(error);
      });
      return { seen, stop: () => subscription.unsubscribe() };
    };
    const cleanup = () => {
      for (const r of readers) r.stop();
      writer.close();
      store.close();
    };
    return { dir, store, writer, counters, drain, cleanup };
  };
}

/** The deliveries' payloads as text. */
export const payloads = (d: readonly Delivery[]): string[] => d.map((x) => Buffer.from(x.envelope.payload).toString());

export async function until(check: () => boolean, what: string, ms = 5000): Promise<void> {
  for (const end = Date.now() + ms; !check(); ) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await sleep(5);
  }
}
