import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Delivery } from '../../src/core/delivery.ts';
import type { Source } from '../../src/core/stream.ts';
import { eventually } from '../harness/eventually.ts';

/** What a source's test gives the shared suite. */
export interface SourceUnderTest {
  start(): Promise<{
    source: Source;
    /**
     * Sends one message upstream from the test's one producer (one device, one partition), in
     * the order of the calls; resolves when the producer got its acknowledgement. Like a real
     * producer, it sends again what was refused (its device reconnects, its partition is read
     * again) until it is acknowledged.
     */
    produce(payload: string): Promise<void>;
    cleanup(): Promise<void>;
  }>;
}

const text = (d: Delivery | undefined) => Buffer.from(d?.envelope.payload ?? []).toString();

/** A promise's state, for checks that must not wait for it. */
function watch(promise: Promise<void>): () => 'pending' | 'acknowledged' | 'failed' {
  let state: 'pending' | 'acknowledged' | 'failed' = 'pending';
  promise.then(
    () => (state = 'acknowledged'),
    () => (state = 'failed'),
  );
  return () => state;
}

/**
 * The contract every source keeps: one delivery per message with its bytes intact, the
 * producer acknowledged only after the delivery is acked, never after a nack, nacked
 * messages delivered again in their order, and nothing left running after unsubscribe.
 */
export function sourceConformance(name: string, sut: SourceUnderTest): void {
  describe(`source conformance: ${name}`, () => {
    test('emits each message once, with its payload, and acknowledges the producer only after ack', async () => {
      const { source, produce, cleanup } = await sut.start();
      const received: Delivery[] = [];
      const subscription = source.subscribe((d) => received.push(d));
      try {
        const produced = produce('hello 1');
        const state = watch(produced);
        const first = await eventually(
          () => {
            assert.equal(received.length, 1);
            return received[0] as Delivery;
          },
          { timeoutMs: 20_000 },
        );
        assert.equal(text(first), 'hello 1');
        assert.match(first.envelope.id, /^[0-9a-f-]{36}$/);
        assert.equal(state(), 'pending', 'the producer was acknowledged before the delivery was acked');
        first.ack();
        await produced;
        const more = [produce('hello 2'), produce('hello 3')];
        await eventually(() => assert.equal(received.length, 3), { timeoutMs: 20_000 });
        for (const d of received.slice(1)) d.ack();
        await Promise.all(more);
        assert.deepEqual(received.map(text), ['hello 1', 'hello 2', 'hello 3']);
      } finally {
        subscription.unsubscribe();
        await cleanup();
      }
    });

    test('never acknowledges the producer for a nacked delivery: it comes again, and only its ack acknowledges', async () => {
      const { source, produce, cleanup } = await sut.start();
      const received: Delivery[] = [];
      const subscription = source.subscribe((d) => received.push(d));
      try {
        const produced = produce('refused');
        const state = watch(produced);
        for (let attempt = 1; attempt <= 2; attempt++) {
          const delivery = await eventually(
            () => {
              assert.equal(received.length, attempt);
              return received[attempt - 1] as Delivery;
            },
            { timeoutMs: 20_000 },
          );
          assert.equal(text(delivery), 'refused');
          // The nack reaches the producer's side before the message can come again: it is the marker
          // after which an acknowledgement would have shown.
          assert.equal(state(), 'pending', `the producer was acknowledged after ${attempt - 1} nacks`);
          delivery.nack(new Error('refused by the test'));
        }
        const third = await eventually(
          () => {
            assert.equal(received.length, 3);
            return received[2] as Delivery;
          },
          { timeoutMs: 20_000 },
        );
        assert.equal(state(), 'pending', 'the producer was acknowledged after 2 nacks');
        third.ack();
        await produced;
      } finally {
        subscription.unsubscribe();
        await cleanup();
      }
    });

    test('after a nacked batch, the messages come again in their order', async () => {
      const { source, produce, cleanup } = await sut.start();
      const received: Delivery[] = [];
      let take = false;
      const subscription = source.subscribe((d) => {
        received.push(d);
        if (take) d.ack();
      });
      try {
        const produced = ['m1', 'm2', 'm3'].map((payload) => produce(payload));
        await eventually(() => assert.equal(received.length, 3), { timeoutMs: 20_000 });
        // A sink refuses a whole batch: every delivery of it is nacked, in order. From then on it
        // takes each message as it comes (a source may send one again only after the one before).
        take = true;
        for (const d of received) d.nack(new Error('batch refused by the test'));
        await Promise.all(produced);
        assert.deepEqual(received.map(text), ['m1', 'm2', 'm3', 'm1', 'm2', 'm3']);
      } finally {
        subscription.unsubscribe();
        await cleanup();
      }
    });

    test('stops emitting and leaves no handle open after unsubscribe', async () => {
      const before = process.getActiveResourcesInfo().length;
      const { source, produce, cleanup } = await sut.start();
      const received: Delivery[] = [];
      const first = source.subscribe((d) => {
        received.push(d);
        d.ack();
      });
      // Running before it is left: a source unsubscribed while it still connects is another case.
      await produce('before unsubscribe');
      first.unsubscribe();
      // The marker: a new subscriber gets the next message; the one that left must not.
      const later: Delivery[] = [];
      const again = source.subscribe((d) => {
        later.push(d);
        d.ack();
      });
      try {
        await produce('after unsubscribe');
        assert.deepEqual(later.map(text), ['after unsubscribe']);
        assert.deepEqual(received.map(text), ['before unsubscribe']);
      } finally {
        again.unsubscribe();
        await cleanup();
      }
      await eventually(
        () => {
          const after = process.getActiveResourcesInfo().length;
          assert.ok(after <= before, `open handles: ${after} after, ${before} before: ${process.getActiveResourcesInfo().join(', ')}`);
        },
        { timeoutMs: 5000, intervalMs: 100 },
      );
    });
  });
}
