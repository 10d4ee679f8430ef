import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createDelivery, createInternalDelivery, createSharedDelivery, fanOut, fanOutAll } from '../../../src/core/delivery.ts';
import { createEnvelope } from '../../../src/core/envelope.ts';

const envelope = () => createEnvelope({ topic: 't', payload: 'x', origin: { source: 'test' } });

test('a delivery settles once; a second ack or nack is ignored and reported', () => {
  const calls: string[] = [];
  const d = createDelivery(envelope(), {
    onAck: () => calls.push('ack'),
    onNack: (e) => calls.push(`nack:${e.message}`),
    onDoubleSettle: (attempt, state) => calls.push(`double:${attempt}:${state}`),
  });
  assert.equal(d.state, 'pending');
  d.ack();
  d.ack();
  d.nack(new Error('late'));
  assert.equal(d.state, 'acked');
  assert.deepEqual(calls, ['ack', 'double:ack:acked', 'double:nack:acked']);
});

test('deliveries sharing handlers each give them their own context, and settle once even when called detached', () => {
  const calls: string[] = [];
  const handlers = {
    onAck: (context: { n: number }) => calls.push(`ack:${context.n}`),
    onNack: (context: { n: number }, e: Error) => calls.push(`nack:${context.n}:${e.message}`),
    onDoubleSettle: (context: { n: number }, attempt: string, state: string) => calls.push(`double:${context.n}:${attempt}:${state}`),
    isAbandoned: (context: { n: number }) => context.n === 2,
  };
  const one = createSharedDelivery(envelope(), handlers, { n: 1 });
  const two = createSharedDelivery(envelope(), handlers, { n: 2 });
  assert.equal(one.abandoned?.(), false);
  assert.equal(two.abandoned?.(), true);
  const { ack } = one;
  const { nack } = two;
  ack();
  nack(new Error('down'));
  one.nack(new Error('late'));
  assert.equal(two.abandoned?.(), false, 'a settled delivery is not abandoned');
  assert.deepEqual([one.state, two.state], ['acked', 'nacked']);
  assert.deepEqual(calls, ['ack:1', 'nack:2:down', 'double:1:nack:acked']);
  // Spread into a new object (a changed envelope), it still settles the original.
  const three = createSharedDelivery(envelope(), handlers, { n: 3 });
  const copy = { ...three, envelope: envelope() };
  copy.ack();
  assert.equal(three.state, 'acked');
  assert.deepEqual(calls.at(-1), 'ack:3');
});

test('an internal delivery (methods of its class) settles once, reports the second settle, and tells abandonment like a shared one', () => {
  const calls: string[] = [];
  const handlers = {
    onAck: (context: { n: number }) => calls.push(`ack:${context.n}`),
    onNack: (context: { n: number }, e: Error) => calls.push(`nack:${context.n}:${e?.message}`),
    onDoubleSettle: (context: { n: number }, attempt: string, state: string) => calls.push(`double:${context.n}:${attempt}:${state}`),
    isAbandoned: (context: { n: number }) => context.n === 2,
  };
  const one = createInternalDelivery(envelope(), handlers, { n: 1 });
  const two = createInternalDelivery(envelope(), handlers, { n: 2 });
  assert.deepEqual([one.abandoned?.(), two.abandoned?.()], [false, true]);
  one.ack();
  one.ack();
  two.nack(new Error('down'));
  two.ack();
  assert.deepEqual([one.state, two.state], ['acked', 'nacked']);
  assert.equal(two.abandoned?.(), false, 'a settled delivery is not abandoned');
  assert.deepEqual(calls, ['ack:1', 'double:1:ack:acked', 'nack:2:down', 'double:2:ack:nacked']);
});

test('a nack without an error (from plain JavaScript) is still a nack, never an ack', () => {
  for (const make of [createSharedDelivery, createInternalDelivery]) {
    const calls: string[] = [];
    const d = make(envelope(), { onAck: () => calls.push('ack'), onNack: () => calls.push('nack') }, undefined);
    (d.nack as () => void)();
    assert.deepEqual([d.state, calls], ['nacked', ['nack']]);
  }
});

test('envelopes get time-ordered UUIDv7 ids', () => {
  const a = envelope();
  const b = envelope();
  assert.match(a.id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.ok(a.id < b.id);
  assert.deepEqual(Buffer.from(a.payload).toString(), 'x');
});

test('fanOut acks upstream when all parts acked, nacks on the first nack only', () => {
  const events: string[] = [];
  const upstream = () =>
    createDelivery(envelope(), { onAck: () => events.push('ack'), onNack: (e) => events.push(`nack:${e.message}`), onDoubleSettle: () => events.push('double') });

  const [a, b, c] = fanOut(upstream(), 3);
  a?.ack();
  b?.ack();
  assert.deepEqual(events, []);
  c?.ack();
  assert.deepEqual(events, ['ack']);

  events.length = 0;
  const [x, y] = fanOut(upstream(), 2);
  x?.nack(new Error('down'));
  y?.ack();
  y?.nack(new Error('again'));
  assert.deepEqual(events, ['nack:down']);

  events.length = 0;
  assert.deepEqual(fanOut(upstream(), 0), []);
  assert.deepEqual(events, ['ack']);
});

test('fanOutAll settles upstream once every part has: acked when all were, else nacked with the first error after saying which parts were acked', () => {
  const calls: string[] = [];
  const upstream = () =>
    createDelivery(envelope(), {
      onAck: () => calls.push('ack'),
      onNack: (e) => calls.push(`nack:${e.message}`),
    });
  const all = fanOutAll(upstream(), 3, () => calls.push('parted'));
  for (const part of all) part.ack();
  assert.deepEqual(calls, ['ack']);

  calls.length = 0;
  const parts = fanOutAll(upstream(), 3, (acked) => calls.push(`parted:${acked.join(',')}`));
  (parts[1] as ReturnType<typeof createDelivery>).nack(new Error('first'));
  (parts[2] as ReturnType<typeof createDelivery>).nack(new Error('second'));
  assert.deepEqual(calls, [], 'settled before the last part did');
  (parts[0] as ReturnType<typeof createDelivery>).ack();
  assert.deepEqual(calls, ['parted:true,false,false', 'nack:first']);
});
