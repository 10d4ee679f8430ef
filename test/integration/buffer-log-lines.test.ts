// The buffer's log lines say what is true and are JSON with each key once. The "buffer full" line
// of a commit that filled a bridge gave its usage from before that commit (`0/20 messages` while
// the bridge held 20). A sink's reader logged `sink` beside the logger's binding of the same name
// that a bridge gives each sink's reader, so its lines carried the key twice.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Logger } from 'pino';
import { bufferPolicySchema, bufferSettingsSchema, type BufferPolicy } from '../../src/buffer/config.ts';
import { openBuffer } from '../../src/buffer/open.ts';
import { cursorSource } from '../../src/buffer/reader.ts';
import { streamCursor } from '../../src/buffer/stream-reader.ts';
import { BufferWriter } from '../../src/buffer/writer.ts';
import type { Delivery } from '../../src/core/delivery.ts';
import { FerryError } from '../../src/core/errors.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { trackedDeliveries } from '../conformance/deliveries.ts';
import { until } from '../harness/buffer-setup.ts';
import { eventually } from '../harness/eventually.ts';
import { capturedLogger, duplicateKeys } from '../harness/log-lines.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-buffer-log-lines-');

/** A buffer with bridge `b` (sink `out`) under `policy`, its writer logging as the gateway's does (`component: buffer`). */
function buffer(logger: Logger, policy: Partial<BufferPolicy>) {
  const { store } = openBuffer(tempDir(), logger);
  const counters = new CounterRegistry();
  const writer = new BufferWriter(store, bufferSettingsSchema().parse({}), logger.child({ component: 'buffer' }), counters);
  const full = bufferPolicySchema().parse({ retryInitialMs: 10, retryMaxMs: 40, ...policy });
  store.registerBridge('b', ['out']);
  writer.setPolicy('b', full);
  return { store, writer, counters, policy: full, close: () => (writer.close(), store.close()) };
}

const parsed = (lines: readonly string[]) => lines.map((line) => JSON.parse(line) as Record<string, unknown>);

test('the "buffer full" line gives what the bridge holds, the commit that filled it included', { timeout: 20_000 }, async () => {
  const { logger, lines } = capturedLogger();
  const { store, writer, close } = buffer(logger, { maxMessages: 20, overflow: 'refuse' });
  try {
    const flood = trackedDeliveries(25);
    for (const d of flood.deliveries) writer.enqueue('b', d);
    await until(() => flood.acked.length === 20 && writer.held === 5, '20 stored and acknowledged, 5 held');
    let bytes = 0;
    for (const d of flood.deliveries.slice(0, 20)) bytes += d.envelope.payload.byteLength;
    assert.deepEqual(store.usage('b'), { messages: 20, bytes });
    const full = parsed(lines).filter((l) => String(l['msg']).startsWith('buffer full'));
    assert.equal(full.length, 1, 'logged once');
    assert.match(String(full[0]?.['msg']), new RegExp(`^buffer full: b \\(20/20 messages, ${bytes}/268435456 bytes\\) under overflow: refuse`));
    for (const line of lines) assert.deepEqual(duplicateKeys(line), [], line);
  } finally {
    close();
  }
});

/** The loggers a reader is given: a bridge's for each sink (runtime/bridge.ts), a handler bridge's (no sink), a library user's. */
const shapes: [string, (root: Logger) => Logger][] = [
  ['bridge and sink bound', (root) => root.child({ bridge: 'b' }).child({ sink: 'out' })],
  ['bridge bound', (root) => root.child({ bridge: 'b' })],
  ['nothing bound', (root) => root],
];

for (const reader of [cursorSource, streamCursor]) {
  for (const [shape, make] of shapes) {
    test(`${reader.name} (${shape}): its lines on retries, rejections, double settles and failed statements name the sink once`, { timeout: 20_000 }, async () => {
      const { logger: root, lines } = capturedLogger();
      const { store, writer, counters, policy, close } = buffer(root, {});
      const stored = trackedDeliveries(10);
      for (const d of stored.deliveries) writer.enqueue('b', d);
      await stored.settled();
      const [first, , , rejected, , twice] = stored.deliveries.map((d) => d.envelope.id);
      const source = reader({ store, writer, bridge: 'b', sink: 'out', policy, logger: make(root), counters });
      // Refused writes: the dead letter and the cursor's move fail until the buffer takes writes again.
      store.pragma('query_only = 1');
      let retried = false;
      const subscription = source.deliveries.subscribe((d: Delivery) => {
        const { id } = d.envelope;
        if (id === first && !retried) {
          retried = true;
          d.nack(new Error('upstream down'));
        } else if (id === rejected) d.nack(new FerryError('MESSAGE_INVALID', 'not for this sink', { retryable: false }));
        else {
          d.ack();
          if (id === twice) d.ack();
        }
      });
      try {
        await eventually(() => assert.ok((counters.get('buffer.errors{reason=read_failed}') ?? 0) >= 1));
        store.pragma('query_only = 0');
        await eventually(() => assert.equal(store.stats('b').sinks[0]?.pending, 0));
        await eventually(() => assert.ok(parsed(lines).some((l) => l['msg'] === 'reading the buffer works again')));
      } finally {
        subscription.unsubscribe();
        close();
      }
      const expected = [
        reader === cursorSource ? 'write failed; will retry' : 'not handled; will deliver again',
        'rejected for good: moved to dead letters',
        'bug: a delivery was settled twice',
        'reading the buffer or moving the cursor failed; trying again',
        'reading the buffer works again',
      ];
      const logged = parsed(lines);
      for (const msg of expected) {
        const line = logged.find((l) => l['msg'] === msg);
        assert.ok(line !== undefined, `logged: ${msg}`);
        assert.equal(line['sink'], 'out', `${msg}: names the sink`);
      }
      for (const line of lines) assert.deepEqual(duplicateKeys(line), [], line);
    });
  }
}

test('cursorSource under live-first replay (bridge and sink bound): the start and the end of a backlog name the sink once', { timeout: 20_000 }, async () => {
  const { logger: root, lines } = capturedLogger();
  const { store, writer, counters, policy, close } = buffer(root, { replay: 'live-first', windowSize: 4 });
  const stored = trackedDeliveries(10);
  for (const d of stored.deliveries) writer.enqueue('b', d);
  await stored.settled();
  const source = cursorSource({ store, writer, bridge: 'b', sink: 'out', policy, logger: root.child({ bridge: 'b' }).child({ sink: 'out' }), counters });
  const subscription = source.deliveries.subscribe((d: Delivery) => d.ack());
  try {
    await eventually(() => assert.ok(parsed(lines).some((l) => l['msg'] === 'backlog delivered: back to arrival order')));
  } finally {
    subscription.unsubscribe();
    close();
  }
  const logged = parsed(lines);
  for (const msg of ['sink is behind: new messages first, backlog behind them', 'backlog delivered: back to arrival order']) {
    assert.equal(logged.find((l) => l['msg'] === msg)?.['sink'], 'out', msg);
  }
  for (const line of lines) assert.deepEqual(duplicateKeys(line), [], line);
});
