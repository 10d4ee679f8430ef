// A bridge reloaded with a longer maxAgeMs keeps what is not that old yet, even when the
// shorter one was still expiring a backlog in steps (or its step failed) at the reload.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import { bufferPolicySchema, bufferSettingsSchema } from '../../src/buffer/config.ts';
import { openBuffer } from '../../src/buffer/open.ts';
import { BufferWriter } from '../../src/buffer/writer.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { trackedDeliveries } from '../conformance/deliveries.ts';
import { eventually } from '../harness/eventually.ts';
import { tempDirs } from '../harness/temp.ts';

const logger = pino({ level: 'silent' });
const tempDir = tempDirs('ferry-expiry-reload-');
/** The longer maxAgeMs: its expiry turns every 1.5 s, and nothing here gets that old. */
const LONGER_MS = 15_000;

test('a reload to a longer maxAgeMs in the middle of an expiry in steps keeps the rest of the backlog', { timeout: 30_000 }, async () => {
  const { store } = openBuffer(tempDir(), logger);
  const counters = new CounterRegistry();
  const writer = new BufferWriter(store, bufferSettingsSchema().parse({}), logger, counters);
  try {
    store.registerBridge('b', ['out']);
    writer.setPolicy('b', bufferPolicySchema().parse({ maxAgeMs: 300 }));
    // More than one expiry step (10,000), stored by this run: aged by the monotonic clock.
    for (let i = 0; i < 3; i++) store.append(trackedDeliveries(4_000).deliveries.map((d) => ({ bridge: 'b', envelope: d.envelope })));
    // The reload lands right after the first step, before the next one.
    const count = counters.count.bind(counters);
    let reloaded = false;
    counters.count = (name, labels, by) => {
      count(name, labels, by);
      if (name === 'buffer.expired' && !reloaded) {
        reloaded = true;
        writer.setPolicy('b', bufferPolicySchema().parse({ maxAgeMs: LONGER_MS }));
      }
    };
    await eventually(() => assert.ok(reloaded, 'no expiry step ran'), { timeoutMs: 5_000 });
    assert.equal(store.usage('b').messages, 2_000);
    // Turns of the longer maxAgeMs run (every 1.5 s); the 2,000 left are seconds old, not 15.
    const expiredBy = () => counters.get('buffer.expired{bridge=b}');
    await new Promise((r) => setTimeout(r, 3_500));
    assert.equal(store.usage('b').messages, 2_000, 'messages younger than the maxAgeMs reloaded expired');
    assert.equal(expiredBy(), 10_000);
    // They still go once that old.
    await eventually(() => assert.equal(store.usage('b').messages, 0), { timeoutMs: 20_000 });
  } finally {
    writer.close();
    store.close();
  }
});
