import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import { Subject, lastValueFrom, toArray } from 'rxjs';
import type { Delivery } from '../../src/core/delivery.ts';
import type { Sink, SinkEvent } from '../../src/core/stream.ts';
import { trackedDeliveries } from './deliveries.ts';

/** What a sink's test gives the shared suite. */
export interface SinkUnderTest {
  /** A sink writing to a fresh, working destination. */
  working(): Promise<{ sink: Sink; readBack(): Promise<string[]>; cleanup(): Promise<void> }>;
  /** A sink whose destination refuses every write (down, read-only, unreachable). */
  failing(): Promise<{ sink: Sink; cleanup(): Promise<void> }>;
  /** Most deliveries one batch may hold with the sink's test config. */
  readonly batchSize: number;
}

/**
 * The contract every sink keeps: acks only what the destination confirmed, nacks what it
 * could not write, settles each delivery exactly once, batches, and leaves no handle open
 * once it completed or was unsubscribed.
 */
export function sinkConformance(name: string, sut: SinkUnderTest): void {
  describe(`sink conformance: ${name}`, () => {
    test('acks every delivery after the destination has it, exactly once, in batches', async () => {
      const { sink, readBack, cleanup } = await sut.working();
      try {
        const count = sut.batchSize * 3 + 7;
        const tracked = trackedDeliveries(count);
        const input = new Subject<Delivery>();
        const events = lastValueFrom(sink(input).pipe(toArray()));
        for (const d of tracked.deliveries) input.next(d);
        await tracked.settled();
        input.complete();
        const written = (await events).filter((e): e is Extract<SinkEvent, { type: 'written' }> => e.type === 'written');
        assert.equal(tracked.nacked.size, 0, `unexpected nacks: ${[...tracked.nacked.values()][0]?.message}`);
        assert.equal(tracked.acked.length, count);
        assert.deepEqual(tracked.doubleSettles, []);
        assert.equal(written.reduce((n, e) => n + e.count, 0), count);
        assert.ok(written.length >= 4, `expected at least 4 batches of at most ${sut.batchSize}, got ${written.length}`);
        assert.ok(written.every((e) => e.count <= sut.batchSize));
        const stored = new Set(await readBack());
        const missing = tracked.acked.filter((id) => !stored.has(id));
        assert.deepEqual(missing, [], 'acked but not found at the destination');
      } finally {
        await cleanup();
      }
    });

    test('nacks every delivery it could not write and acks none', async () => {
      const { sink, cleanup } = await sut.failing();
      try {
        const tracked = trackedDeliveries(5);
        const input = new Subject<Delivery>();
        const events = lastValueFrom(sink(input).pipe(toArray()));
        for (const d of tracked.deliveries) input.next(d);
        await tracked.settled();
        input.complete();
        assert.equal(tracked.acked.length, 0);
        assert.equal(tracked.nacked.size, 5);
        assert.deepEqual(tracked.doubleSettles, []);
        const failed = (await events).filter((e) => e.type === 'failed');
        assert.equal(failed.reduce((n, e) => n + e.count, 0), 5);
        for (const error of tracked.nacked.values()) assert.ok(error.message.length > 0);
      } finally {
        await cleanup();
      }
    });

    test('completes after its input completes, writing what it held', async () => {
      const { sink, readBack, cleanup } = await sut.working();
      try {
        const tracked = trackedDeliveries(3);
        const input = new Subject<Delivery>();
        const events = lastValueFrom(sink(input).pipe(toArray()));
        for (const d of tracked.deliveries) input.next(d);
        input.complete();
        await events;
        await tracked.settled();
        assert.equal(tracked.acked.length, 3);
        const stored = new Set(await readBack());
        assert.ok(tracked.acked.every((id) => stored.has(id)));
      } finally {
        await cleanup();
      }
    });

    test('leaves no handle open after it completed or was unsubscribed', async () => {
      const before = handles();
      const { sink, cleanup } = await sut.working();
      try {
        const tracked = trackedDeliveries(2);
        const input = new Subject<Delivery>();
        const events = lastValueFrom(sink(input).pipe(toArray()));
        for (const d of tracked.deliveries) input.next(d);
        await tracked.settled();
        input.complete();
        await events;
        const second = sink(new Subject<Delivery>()).subscribe();
        await sleep(20);
        second.unsubscribe();
      } finally {
        await cleanup();
      }
      assert.ok(await settlesTo(before), `handles left open: ${JSON.stringify(diff(before, handles()))}`);
    });
  });
}

function handles(): Map<string, number> {
  const counts = new Map<string, number>();
  for (const kind of process.getActiveResourcesInfo()) counts.set(kind, (counts.get(kind) ?? 0) + 1);
  return counts;
}

function diff(before: Map<string, number>, after: Map<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [kind, n] of after) if (n > (before.get(kind) ?? 0)) out[kind] = n - (before.get(kind) ?? 0);
  return out;
}

/** Closing a connection takes a few turns of the event loop; wait up to 5 s. */
async function settlesTo(before: Map<string, number>): Promise<boolean> {
  for (let i = 0; i < 50; i++) {
    const extra = diff(before, handles());
    if (Object.keys(extra).length === 0) return true;
    await sleep(100);
  }
  return false;
}
