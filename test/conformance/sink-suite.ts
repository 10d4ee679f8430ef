import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Subject, lastValueFrom, toArray } from 'rxjs';
import type { Delivery } from '../../src/core/delivery.ts';
import type { Envelope } from '../../src/core/envelope.ts';
import { isFerryError } from '../../src/core/errors.ts';
import type { Sink, SinkEvent } from '../../src/core/stream.ts';
import { eventually } from '../harness/eventually.ts';
import { trackedDeliveries, trackedEnvelopes } from './deliveries.ts';

/** A sink and the destination it writes to. */
export interface SinkDestination {
  readonly sink: Sink;
  /** The envelope ids the destination holds, in the order it holds them (duplicates kept). */
  readBack(): Promise<string[]>;
  cleanup(): Promise<void>;
}

/** The cases of the shared suite, by the name a sink's test uses to mark one as a known gap. */
export type SinkCase = 'batches' | 'failing' | 'retryable' | 'drain' | 'handles' | 'unwritable' | 'order after failure';

/** What a sink's test gives the shared suite. */
export interface SinkUnderTest {
  /** A sink writing to a fresh, working destination. */
  working(): Promise<SinkDestination>;
  /** A sink whose destination refuses every write (down, read-only, unreachable). */
  failing(): Promise<{ sink: Sink; cleanup(): Promise<void> }>;
  /**
   * A working destination and one message the sink can never write there (a topic template
   * without a value for it, say). Absent for a sink that can write any message: the test
   * that passes it says why.
   */
  unwritable?(): Promise<SinkDestination & { readonly poison: Envelope }>;
  /**
   * A destination that refuses writes until `recover()`: a transient fault, such as a broker
   * that is down for a while. Called from the first nack; what it returns is awaited before
   * the refused messages are sent again.
   */
  flaky(): Promise<SinkDestination & { recover(): void | Promise<void> }>;
  /** Most deliveries one batch may hold with the sink's test config. */
  readonly batchSize: number;
  /** Cases this sink is known to fail, with the reason: they run, reported as todo. */
  readonly knownGaps?: Partial<Record<SinkCase, string>>;
}

type Written = Extract<SinkEvent, { type: 'written' }>;
type Failed = Extract<SinkEvent, { type: 'failed' }>;

/**
 * The contract every sink keeps: acks only what the destination confirmed, nacks what it
 * could not write (retryable when trying again may help, not when the message itself can
 * never be written), settles each delivery exactly once, batches, keeps order across a
 * failure, and leaves no handle open once it completed or was unsubscribed.
 */
export function sinkConformance(name: string, sut: SinkUnderTest): void {
  // Inputs of the running case: completed when it ends, so that a failed assertion does not
  // leave a sink (and its connection) running.
  const inputs: Subject<Delivery>[] = [];
  const newInput = () => {
    const input = new Subject<Delivery>();
    inputs.push(input);
    return input;
  };
  const caseOf = (id: SinkCase, title: string, body: () => Promise<void>) => {
    const gap = sut.knownGaps?.[id];
    test(title, gap === undefined ? {} : { todo: gap }, async () => {
      try {
        await body();
      } finally {
        for (const input of inputs.splice(0)) input.complete();
      }
    });
  };

  describe(`sink conformance: ${name}`, () => {
    caseOf('batches', 'acks every delivery after the destination has it, exactly once, in batches', async () => {
      const { sink, readBack, cleanup } = await sut.working();
      try {
        const count = sut.batchSize * 3 + 7;
        const tracked = trackedDeliveries(count);
        const input = newInput();
        const events = lastValueFrom(sink(input).pipe(toArray()));
        for (const d of tracked.deliveries) input.next(d);
        await tracked.settled();
        input.complete();
        const written = (await events).filter((e): e is Written => e.type === 'written');
        assert.equal(tracked.nacked.size, 0, `unexpected nacks: ${[...tracked.nacked.values()][0]?.message}`);
        assert.equal(tracked.acked.length, count);
        assert.deepEqual(tracked.doubleSettles, []);
        assert.equal(
          written.reduce((n, e) => n + e.count, 0),
          count,
        );
        assert.ok(written.length >= 4, `expected at least 4 batches of at most ${sut.batchSize}, got ${written.length}`);
        assert.ok(written.every((e) => e.count <= sut.batchSize));
        const stored = new Set(await readBack());
        const missing = tracked.acked.filter((id) => !stored.has(id));
        assert.deepEqual(missing, [], 'acked but not found at the destination');
      } finally {
        await cleanup();
      }
    });

    caseOf('failing', 'nacks every delivery it could not write and acks none', async () => {
      const { sink, cleanup } = await sut.failing();
      try {
        const tracked = trackedDeliveries(5);
        const input = newInput();
        const events = lastValueFrom(sink(input).pipe(toArray()));
        for (const d of tracked.deliveries) input.next(d);
        await tracked.settled();
        input.complete();
        assert.equal(tracked.acked.length, 0);
        assert.equal(tracked.nacked.size, 5);
        assert.deepEqual(tracked.doubleSettles, []);
        const failed = (await events).filter((e) => e.type === 'failed');
        assert.equal(
          failed.reduce((n, e) => n + e.count, 0),
          5,
        );
        for (const error of tracked.nacked.values()) assert.ok(error.message.length > 0);
      } finally {
        await cleanup();
      }
    });

    caseOf('retryable', 'a write the destination refused is nacked as retryable: trying again later may succeed', async () => {
      const { sink, cleanup } = await sut.failing();
      try {
        const tracked = trackedDeliveries(3);
        const input = newInput();
        const events = lastValueFrom(sink(input).pipe(toArray()));
        for (const d of tracked.deliveries) input.next(d);
        await tracked.settled();
        input.complete();
        for (const error of tracked.nacked.values()) {
          assert.ok(isFerryError(error), `not a FerryError: ${error.name}: ${error.message}`);
          assert.equal(error.retryable, true, `${error.code}: ${error.message}`);
        }
        const failed = (await events).filter((e): e is Failed => e.type === 'failed');
        assert.ok(failed.length > 0);
        assert.ok(
          failed.every((e) => e.retryable),
          'a failed event says not retryable',
        );
      } finally {
        await cleanup();
      }
    });

    caseOf('drain', 'completes after its input completes, writing what it held', async () => {
      const { sink, readBack, cleanup } = await sut.working();
      try {
        const tracked = trackedDeliveries(3);
        const input = newInput();
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

    caseOf('handles', 'leaves no handle open after it completed or was unsubscribed', async () => {
      const before = handles();
      const { sink, cleanup } = await sut.working();
      try {
        const tracked = trackedDeliveries(2);
        const input = newInput();
        const events = lastValueFrom(sink(input).pipe(toArray()));
        for (const d of tracked.deliveries) input.next(d);
        await tracked.settled();
        input.complete();
        await events;
        // Unsubscribed while it still waits for input.
        const second = sink(newInput()).subscribe();
        second.unsubscribe();
      } finally {
        await cleanup();
      }
      // Closing a connection takes a few turns of the event loop.
      await eventually(() => assert.deepEqual(diff(before, handles()), {}, 'handles left open'), { timeoutMs: 5000, intervalMs: 100 });
    });

    if (sut.unwritable !== undefined) {
      const unwritable = sut.unwritable;
      caseOf('unwritable', 'a message that can never be written is nacked alone as not retryable; the rest of its batch is written', async () => {
        const { sink, readBack, poison, cleanup } = await unwritable();
        try {
          const good = trackedDeliveries(4);
          const envelopes = good.deliveries.map((d) => d.envelope);
          envelopes.splice(2, 0, poison);
          const tracked = trackedEnvelopes(envelopes);
          const input = newInput();
          const events = lastValueFrom(sink(input).pipe(toArray()));
          for (const d of tracked.deliveries) input.next(d);
          await tracked.settled();
          input.complete();
          const error = tracked.nacked.get(poison.id);
          assert.ok(isFerryError(error), `the poison message was not nacked with a FerryError: ${String(error)}`);
          assert.equal(error.retryable, false, `${error.code}: ${error.message}`);
          assert.deepEqual([...tracked.nacked.keys()], [poison.id], 'good messages were nacked with it');
          const goodIds = envelopes.filter((e) => e !== poison).map((e) => e.id);
          assert.deepEqual(tracked.acked.toSorted(), goodIds.toSorted());
          assert.deepEqual(tracked.doubleSettles, []);
          const all = await events;
          const failed = all.filter((e): e is Failed => e.type === 'failed');
          assert.deepEqual(
            failed.map((e) => [e.count, e.retryable]),
            [[1, false]],
          );
          assert.equal(
            all.filter((e): e is Written => e.type === 'written').reduce((n, e) => n + e.count, 0),
            4,
          );
          const stored = await readBack();
          assert.deepEqual(
            stored.filter((id) => goodIds.includes(id)),
            goodIds,
            'the good messages, in their order',
          );
          assert.ok(!stored.includes(poison.id));
        } finally {
          await cleanup();
        }
      });
    }

    caseOf(
      'order after failure',
      'after a failed batch, nothing that arrived after it is written first: sent again, the messages reach the destination in their order',
      async () => {
        const { sink, readBack, recover, cleanup } = await sut.flaky();
        try {
          const count = sut.batchSize * 2 + 3;
          const envelopes = trackedDeliveries(count).deliveries.map((d) => d.envelope);
          let recovered: Promise<void> | undefined;
          // The fault clears as soon as the first batch is refused: a sink that went on writing
          // the batches already waiting would put them at the destination before that one.
          const first = trackedEnvelopes(envelopes, () => {
            recovered ??= Promise.resolve(recover());
          });
          const input = newInput();
          const events = lastValueFrom(sink(input).pipe(toArray()));
          for (const d of first.deliveries) input.next(d);
          await first.settled();
          await recovered;
          assert.ok(first.nacked.size > 0, 'the faulty destination took every message');
          const outcomes = envelopes.map((e) => (first.nacked.has(e.id) ? 'n' : 'a')).join('');
          assert.match(outcomes, /^a*n+$/, 'a message was written after an earlier one that was refused');

          // Sent again in their order, as a source does after a nack, until all are taken.
          let unwritten = envelopes.filter((e) => first.nacked.has(e.id));
          await eventually(
            async () => {
              const again = trackedEnvelopes(unwritten);
              for (const d of again.deliveries) input.next(d);
              await again.settled();
              unwritten = unwritten.filter((e) => again.nacked.has(e.id));
              assert.deepEqual(
                unwritten.map((e) => e.id),
                [],
                'still refused after recovery',
              );
            },
            { timeoutMs: 20_000, intervalMs: 200 },
          );
          input.complete();
          await events;

          const stored = await readBack();
          const firstSeen = [...new Set(stored)].filter((id) => envelopes.some((e) => e.id === id));
          assert.deepEqual(
            firstSeen.map((id) => envelopes.findIndex((e) => e.id === id)),
            envelopes.map((_, i) => i),
            'the destination does not hold the messages in their order (indexes in arrival order)',
          );
        } finally {
          await cleanup();
        }
      },
    );
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
