// A gateway without a real-time clock that booted in 1970 stamps what it buffers with 1970 until
// NTP sets its clock. Still buffered at the next start (the clock set by then), such messages
// must not be taken for 56 years old and expired at once: they are aged from that start. The
// stamps are written into a real buffer file as that run would have written them.
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
const tempDir = tempDirs('ferry-clock-unset-');
const MAX_AGE_MS = 2_000;

test('messages an earlier run stamped before its clock was set (1970) are not expired at the start, but maxAgeMs after it', { timeout: 30_000 }, async () => {
  const dir = tempDir();
  // The earlier run: one message stamped by a set clock, older than maxAgeMs, then three stamped
  // in 1970, minutes after the epoch.
  const earlier = openBuffer(dir, logger).store;
  earlier.registerBridge('b', ['out']);
  const stamps = [Date.now() - 10 * MAX_AGE_MS, 120_000, 180_000, 240_000];
  earlier.append(trackedDeliveries(stamps.length).deliveries.map((d, i) => ({ bridge: 'b', envelope: { ...d.envelope, timestamp: stamps[i] as number } })));
  earlier.close();

  const { store } = openBuffer(dir, logger);
  const counters = new CounterRegistry();
  const writer = new BufferWriter(store, bufferSettingsSchema().parse({}), logger, counters);
  try {
    store.registerBridge('b', ['out']);
    writer.setPolicy('b', bufferPolicySchema().parse({ maxAgeMs: MAX_AGE_MS }));
    // The first expiry turn takes the message that is really that old...
    await eventually(() => assert.ok((counters.get('buffer.expired{bridge=b}') ?? 0) >= 1, 'no expiry turn ran'), { timeoutMs: 5_000 });
    // ...and not those stamped by the clock not yet set.
    assert.equal(counters.get('buffer.expired{bridge=b}'), 1, 'messages stamped in 1970 expired at the start');
    assert.equal(store.usage('b').messages, 3);
    // They go once they spent maxAgeMs in the buffer of this run.
    await eventually(() => assert.equal(store.usage('b').messages, 0), { timeoutMs: 10_000 });
    assert.equal(counters.get('buffer.expired{bridge=b}'), 4);
  } finally {
    writer.close();
    store.close();
  }
});
