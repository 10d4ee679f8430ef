// The buffer's limits at its edges, on a real buffer file: QoS 0 messages the buffer cannot take
// are dropped and counted, not held in memory; a message larger than the bridge's maxBytes goes
// to the dead letters instead of blocking the bridge; drop-oldest keeps maxBytes by bytes; and a
// failed append holds a commit's messages in their order.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Delivery } from '../../src/core/delivery.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import { trackedDeliveries, trackedEnvelopes } from '../conformance/deliveries.ts';
import { bufferSetup, until } from '../harness/buffer-setup.ts';
import { tempDirs } from '../harness/temp.ts';

const setup = bufferSetup(tempDirs('ferry-buffer-limits-'));

/** Tracked deliveries with these payloads (each `size` bytes of its label when given), at `qos`. */
function sized(labels: readonly string[], qos: 0 | 1 = 1, size?: number) {
  return trackedEnvelopes(
    labels.map((label) =>
      createEnvelope({
        topic: 'devices/d1/telemetry/t',
        payload: size === undefined ? label : Buffer.concat([Buffer.from(label), Buffer.alloc(size - label.length, 32)]),
        origin: { source: 'test', clientId: 'd1', qos },
      }),
    ),
  );
}

test('QoS 0 messages a full bridge (overflow: refuse) cannot take are dropped at once, not held in memory', { timeout: 20_000 }, async () => {
  const { writer, counters, cleanup } = setup({ maxMessages: 1, overflow: 'refuse' });
  try {
    const first = trackedDeliveries(1);
    writer.enqueue('b', first.deliveries[0] as Delivery);
    await first.settled();
    const flood = sized(
      Array.from({ length: 2000 }, (_, i) => `q${i}`),
      0,
    );
    for (const d of flood.deliveries) writer.enqueue('b', d);
    await flood.settled();
    assert.equal(flood.nacked.size, 2000, 'each dropped (the intake counts it as mqtt.publish.qos0_not_stored)');
    assert.equal(writer.held, 0);
    // A QoS 1 message is still held, unacknowledged, for its device to keep.
    const one = trackedDeliveries(1);
    writer.enqueue('b', one.deliveries[0] as Delivery);
    await until(() => writer.held === 1, 'the QoS 1 message held');
    assert.equal(counters.get('buffer.refused'), 1);
  } finally {
    cleanup();
  }
});

test('a message larger than maxBytes goes to the dead letters, counted, and the messages behind it are stored', { timeout: 20_000 }, async () => {
  const { store, writer, counters, drain, cleanup } = setup({ maxBytes: 1000, overflow: 'refuse' });
  try {
    const big = sized(['big'], 1, 2000);
    const small = sized(['s1', 's2', 's3']);
    writer.enqueue('b', big.deliveries[0] as Delivery);
    for (const d of small.deliveries) writer.enqueue('b', d);
    await big.settled();
    await small.settled();
    assert.equal(big.acked.length + small.acked.length, 4, 'all acknowledged: the large one is kept in the dead letters');
    assert.equal(writer.state, 'ok');
    assert.equal(counters.get('bridge.messages.rejected{bridge=b,reason=too_large}'), 1);
    const [dead] = [...store.iterateDeadLetters('b')];
    assert.equal(dead?.sink, 'buffer');
    assert.match(dead?.reason ?? '', /larger than buffer\.maxBytes \(2000 > 1000 bytes\)/);
    const out = drain('out');
    await until(() => out.seen.length === 3, 'the small ones delivered');
    assert.deepEqual(out.seen, ['s1', 's2', 's3']);
  } finally {
    cleanup();
  }
});

test('under drop-oldest a message larger than maxBytes goes to the dead letters too: the bridge is not emptied for it', { timeout: 20_000 }, async () => {
  const { store, writer, cleanup } = setup({ maxBytes: 1000, overflow: 'drop-oldest' });
  try {
    const kept = sized(['k1', 'k2']);
    for (const d of kept.deliveries) writer.enqueue('b', d);
    await kept.settled();
    const big = sized(['big'], 1, 2000);
    writer.enqueue('b', big.deliveries[0] as Delivery);
    await big.settled();
    assert.equal(big.acked.length, 1);
    assert.equal(store.usage('b').messages, 2, 'nothing dropped for it');
    assert.equal([...store.iterateDeadLetters('b')].length, 1);
  } finally {
    cleanup();
  }
});

test('drop-oldest under maxBytes drops by bytes: never above the limit, and no more than it needs', { timeout: 20_000 }, async () => {
  const { store, writer, counters, drain, cleanup } = setup({ maxBytes: 1000, overflow: 'drop-oldest' });
  try {
    const hundreds = sized(
      Array.from({ length: 10 }, (_, i) => `h${i}`),
      1,
      100,
    );
    for (const d of hundreds.deliveries) writer.enqueue('b', d);
    await hundreds.settled();
    // 500 bytes more: the five oldest go, not one.
    const half = sized(['half'], 1, 500);
    writer.enqueue('b', half.deliveries[0] as Delivery);
    await half.settled();
    assert.deepEqual(store.usage('b'), { messages: 6, bytes: 1000 });
    assert.equal(counters.get('buffer.dropped{bridge=b,reason=drop-oldest}'), 5);
    // Ten bytes more, five times in one commit: the oldest 100-byte message makes room for all.
    const tens = sized(
      Array.from({ length: 5 }, (_, i) => `t${i}`),
      1,
      10,
    );
    for (const d of tens.deliveries) writer.enqueue('b', d);
    await tens.settled();
    assert.deepEqual(store.usage('b'), { messages: 10, bytes: 950 });
    assert.equal(counters.get('buffer.dropped{bridge=b,reason=drop-oldest}'), 6);
    const out = drain('out');
    await until(() => out.seen.length === 10, 'delivery');
    assert.deepEqual(
      out.seen.map((p) => p.trim()),
      ['h6', 'h7', 'h8', 'h9', 'half', 't0', 't1', 't2', 't3', 't4'],
    );
  } finally {
    cleanup();
  }
});

test('an append that fails in a commit that also held later messages of the bridge holds them all in their order', { timeout: 20_000 }, async () => {
  const { store, writer, drain, cleanup } = setup({ maxMessages: 2, overflow: 'refuse' });
  try {
    const first = sized(['m0']);
    writer.enqueue('b', first.deliveries[0] as Delivery);
    await first.settled();
    // The disk is full for the next append: a1 fits the bridge's limit but cannot be written; a2
    // and a3 do not fit and are held in the same commit.
    store.pragma(`max_page_count = ${store.pragma('page_count', { simple: true }) as number}`);
    const batch = trackedEnvelopes(
      ['a1', 'a2', 'a3'].map((label, i) =>
        createEnvelope({ topic: 't', payload: i === 0 ? Buffer.concat([Buffer.from(label), Buffer.alloc(20_000, 32)]) : label, origin: { source: 'test', qos: 1 } }),
      ),
    );
    for (const d of batch.deliveries) writer.enqueue('b', d);
    await until(() => writer.state === 'disk-full', 'disk-full');
    assert.equal(writer.held, 3);
    store.pragma('max_page_count = 1073741823');
    const out = drain('out');
    await batch.settled();
    await until(() => out.seen.length === 4, 'all delivered');
    assert.deepEqual(
      out.seen.map((p) => p.slice(0, 2)),
      ['m0', 'a1', 'a2', 'a3'],
    );
  } finally {
    cleanup();
  }
});
