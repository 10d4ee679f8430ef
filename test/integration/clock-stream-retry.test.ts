// A handler's retry must not wait for the wall clock: set back a day (a bad time source, NTP
// correcting a clock that ran ahead) while a nacked message waits for its backoff, the bridge's
// stream went on waiting a day. The clock is set back by replacing Date.now in this process: a
// real step of the clock cannot be made on a machine other services share, and the code under
// test reads the wall clock through Date.now only (the e2e clock tests step it for real).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { bufferPolicySchema, bufferSettingsSchema } from '../../src/buffer/config.ts';
import { openBuffer } from '../../src/buffer/open.ts';
import { streamCursor } from '../../src/buffer/stream-reader.ts';
import { BufferWriter } from '../../src/buffer/writer.ts';
import type { Delivery } from '../../src/core/delivery.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { trackedDeliveries } from '../conformance/deliveries.ts';
import { eventually } from '../harness/eventually.ts';
import { capturedLogger } from '../harness/log-lines.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-clock-stream-');
const DAY_MS = 86_400_000;

test('a nacked message is handed again after its backoff though the wall clock was set back a day meanwhile', { timeout: 30_000 }, async (t) => {
  const { logger } = capturedLogger();
  const { store } = openBuffer(tempDir(), logger);
  const counters = new CounterRegistry();
  const writer = new BufferWriter(store, bufferSettingsSchema().parse({}), logger, counters);
  const policy = bufferPolicySchema().parse({ retryInitialMs: 200, retryMaxMs: 200 });
  store.registerBridge('b', ['out']);
  writer.setPolicy('b', policy);
  const realNow = Date.now;
  t.after(() => {
    Date.now = realNow;
    writer.close();
    store.close();
  });
  const stored = trackedDeliveries(3);
  for (const d of stored.deliveries) writer.enqueue('b', d);
  await stored.settled();
  const first = stored.deliveries[0]?.envelope.id;

  const source = streamCursor({ store, writer, bridge: 'b', sink: 'out', policy, logger, counters });
  const handed: string[] = [];
  const subscription = source.deliveries.subscribe((d: Delivery) => {
    handed.push(d.envelope.id);
    if (d.envelope.id === first && handed.length === 1) {
      d.nack(new Error('upstream down'));
      // Set back while the retry waits for its 200 ms backoff.
      Date.now = () => realNow() - DAY_MS;
    } else d.ack();
  });
  t.after(() => subscription.unsubscribe());

  await eventually(() => assert.equal(handed.filter((id) => id === first).length, 2, `handed: ${handed.length}, the nacked message once`), { timeoutMs: 10_000 });
  await eventually(() => assert.equal(store.stats('b').sinks[0]?.pending, 0));
});
