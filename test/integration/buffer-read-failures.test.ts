// A sink's reader whose statements on the buffer fail for a while (a full disk refuses the move of
// its cursor, another process holds the lock too long) goes on by itself once they work again:
// nothing is lost, and nothing the sink confirmed is handed to it again. SQLite's `query_only`
// makes the real buffer refuse every write as a full disk would (making the disk full needs root).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import { bufferPolicySchema, bufferSettingsSchema } from '../../src/buffer/config.ts';
import { openBuffer } from '../../src/buffer/open.ts';
import { cursorSource } from '../../src/buffer/reader.ts';
import { streamCursor } from '../../src/buffer/stream-reader.ts';
import { BufferWriter } from '../../src/buffer/writer.ts';
import type { Delivery } from '../../src/core/delivery.ts';
import { FerryError } from '../../src/core/errors.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { trackedDeliveries } from '../conformance/deliveries.ts';
import { eventually } from '../harness/eventually.ts';
import { tempDirs } from '../harness/temp.ts';

const logger = pino({ level: 'silent' });
const tempDir = tempDirs('ferry-read-failures-');

for (const reader of [cursorSource, streamCursor]) {
  test(`${reader.name}: while the buffer refuses writes, nothing is lost or handed over twice, and the sink goes on by itself once it takes them again`, async () => {
    const { store } = openBuffer(tempDir(), logger);
    const counters = new CounterRegistry();
    const writer = new BufferWriter(store, bufferSettingsSchema().parse({}), logger, counters);
    const policy = bufferPolicySchema().parse({ retryInitialMs: 10, retryMaxMs: 40 });
    store.registerBridge('b', ['out']);
    writer.setPolicy('b', policy);
    const first = trackedDeliveries(10);
    for (const d of first.deliveries) writer.enqueue('b', d);
    await first.settled();
    const rejectedId = first.deliveries[3]?.envelope.id;

    const seen: string[] = [];
    let failed: unknown;
    const source = reader({ store, writer, bridge: 'b', sink: 'out', policy, logger, counters });
    store.pragma('query_only = 1');
    const subscription = source.deliveries.subscribe({
      next: (d: Delivery) => {
        seen.push(d.envelope.id);
        // One is refused for good, by itself (no search for it): its dead letter is written once the buffer takes writes.
        if (d.envelope.id === rejectedId) d.nack(new FerryError('MESSAGE_INVALID', 'not for this sink', { retryable: false }));
        else d.ack();
      },
      error: (error) => (failed = error),
    });
    try {
      await eventually(() => assert.ok((counters.get('buffer.errors{reason=read_failed}') ?? 0) >= 3, 'tried again and again'));
      assert.equal(store.stats('b').sinks[0]?.pending, 10, 'the cursor could not move');
      assert.equal(failed, undefined, 'the reader goes on');
      store.pragma('query_only = 0');
      await eventually(() => assert.equal(store.stats('b').sinks[0]?.pending, 0));
      const later = trackedDeliveries(5);
      for (const d of later.deliveries) writer.enqueue('b', d);
      await later.settled();
      await eventually(() => assert.equal(store.stats('b').sinks[0]?.pending, 0));
      assert.equal(seen.length, 15, 'each message handed over once');
      assert.deepEqual(new Set(seen), new Set([...first.deliveries, ...later.deliveries].map((d) => d.envelope.id)));
      const letters = [...store.iterateDeadLetters('b')];
      assert.deepEqual(
        letters.map((l) => l.envelope.id),
        [rejectedId],
        'dead-lettered once',
      );
      assert.equal(counters.get('buffer.dead_letters{bridge=b,sink=out}'), 1);
      assert.equal(counters.get('buffer.delivered{bridge=b,sink=out}'), 14);
      assert.equal(failed, undefined);
    } finally {
      subscription.unsubscribe();
      writer.close();
      store.close();
    }
  });
}
