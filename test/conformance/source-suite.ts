import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import type { Delivery } from '../../src/core/delivery.ts';
import type { Source } from '../../src/core/stream.ts';

/** What a source's test gives the shared suite. */
export interface SourceUnderTest {
  start(): Promise<{
    source: Source;
    /** Sends one message upstream; resolves when the producer got its acknowledgement. */
    produce(payload: string): Promise<void>;
    cleanup(): Promise<void>;
  }>;
}

const notYet = Symbol('not yet');

async function within<T>(promise: Promise<T>, ms: number): Promise<T | typeof notYet> {
  return Promise.race([promise, sleep(ms).then((): typeof notYet => notYet)]);
}

/**
 * The contract every source keeps: one delivery per message with its bytes intact, the
 * producer acknowledged only after the delivery is acked, never after a nack, and nothing
 * left running after unsubscribe.
 */
export function sourceConformance(name: string, sut: SourceUnderTest): void {
  describe(`source conformance: ${name}`, () => {
    test('emits each message once, with its payload, and acknowledges the producer only after ack', async () => {
      const { source, produce, cleanup } = await sut.start();
      const received: Delivery[] = [];
      const subscription = source.subscribe((d) => received.push(d));
      try {
        const produced = produce('hello 1');
        const early = await within(produced, 300);
        assert.equal(early, notYet, 'the producer was acknowledged before the delivery was acked');
        assert.equal(received.length, 1);
        const [first] = received as [Delivery];
        assert.equal(Buffer.from(first.envelope.payload).toString(), 'hello 1');
        assert.match(first.envelope.id, /^[0-9a-f-]{36}$/);
        first.ack();
        await produced;
        const more = [produce('hello 2'), produce('hello 3')];
        while (received.length < 3) await sleep(10);
        for (const d of received.slice(1)) d.ack();
        await Promise.all(more);
        assert.deepEqual(received.map((d) => Buffer.from(d.envelope.payload).toString()), ['hello 1', 'hello 2', 'hello 3']);
      } finally {
        subscription.unsubscribe();
        await cleanup();
      }
    });

    test('never acknowledges the producer for a nacked delivery', async () => {
      const { source, produce, cleanup } = await sut.start();
      const subscription = source.subscribe((d) => d.nack(new Error('refused by the test')));
      try {
        const outcome = await within(produce('refused').then(() => 'acknowledged', () => 'failed'), 500);
        assert.notEqual(outcome, 'acknowledged');
      } finally {
        subscription.unsubscribe();
        await cleanup();
      }
    });

    test('stops emitting and leaves no handle open after unsubscribe', async () => {
      const before = process.getActiveResourcesInfo().length;
      const { source, produce, cleanup } = await sut.start();
      const received: Delivery[] = [];
      const subscription = source.subscribe((d) => received.push(d));
      subscription.unsubscribe();
      await within(produce('after unsubscribe').catch(() => undefined), 300);
      assert.equal(received.length, 0);
      await cleanup();
      let after = process.getActiveResourcesInfo().length;
      for (let i = 0; i < 50 && after > before; i++) {
        await sleep(100);
        after = process.getActiveResourcesInfo().length;
      }
      assert.ok(after <= before, `open handles: ${after} after, ${before} before: ${process.getActiveResourcesInfo().join(', ')}`);
    });
  });
}
