// The pipelined batching sink: batches staged side by side, committed one at a time in the
// order they were formed, acked after their own commit; a failure rolls back the staged
// batches after it and nacks them with every batch formed by then.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Subject, lastValueFrom, toArray } from 'rxjs';
import type { Delivery } from '../../../src/core/delivery.ts';
import { FerryError } from '../../../src/core/errors.ts';
import { type StagedBatch, pipelinedSink } from '../../../src/core/pipelined-sink.ts';
import type { SinkEvent } from '../../../src/core/stream.ts';
import { trackedEnvelopes } from '../../conformance/deliveries.ts';
import { createEnvelope } from '../../../src/core/envelope.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const seqOf = (d: Delivery) => (JSON.parse(Buffer.from(d.envelope.payload).toString()) as { seq: number }).seq;

function envelopes(count: number) {
  return Array.from({ length: count }, (_, seq) => createEnvelope({ topic: 't', payload: JSON.stringify({ seq }), origin: { source: 'test', qos: 1 } }));
}

/**
 * A destination with transactions: staged rows become visible at commit. `commitFails` and
 * `stageFails` pick batches (by their first message) to refuse; later batches stage faster
 * than earlier ones, so that a pipeline that committed as batches staged would reorder them.
 */
function destination(options: { commitFails?: (first: number) => boolean; stageFails?: (first: number) => boolean } = {}) {
  const visible: number[] = [];
  const aborted: number[] = [];
  let staging = 0;
  let mostStaged = 0;
  let calls = 0;
  const stage = async (batch: readonly Delivery[]): Promise<StagedBatch> => {
    const rows = batch.map(seqOf);
    const first = rows[0] as number;
    staging += 1;
    mostStaged = Math.max(mostStaged, staging);
    try {
      await sleep(Math.max(1, 12 - 4 * calls++));
      if (options.stageFails?.(first)) throw new FerryError('SINK_WRITE_FAILED', `stage of ${first} refused`, { retryable: true });
    } finally {
      staging -= 1;
    }
    return {
      commit: async () => {
        await sleep(2);
        if (options.commitFails?.(first)) throw new FerryError('SINK_WRITE_FAILED', `commit of ${first} refused`, { retryable: true });
        visible.push(...rows);
      },
      abort: async () => {
        aborted.push(...rows);
      },
    };
  };
  return { stage, visible, aborted, mostStaged: () => mostStaged };
}

async function send(sink: ReturnType<typeof pipelinedSink>, count: number) {
  const all = envelopes(count);
  const tracked = trackedEnvelopes(all);
  const input = new Subject<Delivery>();
  const events = lastValueFrom(sink(input).pipe(toArray()));
  for (const d of tracked.deliveries) input.next(d);
  await tracked.settled();
  input.complete();
  return { tracked, events: (await events) as SinkEvent[], all };
}

test('batches are staged side by side and committed in the order they were formed; each is acked after its commit', async () => {
  const dest = destination();
  const sink = pipelinedSink({ batchSize: 5, batchTimeMs: 1, concurrency: 3 }, async (batch) => {
    const staged = await dest.stage(batch);
    return {
      commit: async () => {
        await staged.commit();
        for (const d of batch) assert.ok(dest.visible.includes(seqOf(d)), 'acked before its commit');
      },
      abort: staged.abort,
    };
  });
  const { tracked } = await send(sink, 23);
  assert.equal(tracked.nacked.size, 0);
  assert.equal(tracked.acked.length, 23);
  assert.deepEqual(
    dest.visible,
    Array.from({ length: 23 }, (_, i) => i),
  );
  assert.ok(dest.mostStaged() >= 2, `at most ${dest.mostStaged()} batch staged at once`);
});

test('a batch that fails in the middle: the staged batches after it are rolled back, it and every batch formed by then are nacked, the ones before it stay acked', async () => {
  const dest = destination({ commitFails: (first) => first === 10 });
  const sink = pipelinedSink({ batchSize: 5, batchTimeMs: 1, concurrency: 3 }, dest.stage);
  const { tracked, events, all } = await send(sink, 25);

  const acked = all.flatMap((e, i) => (tracked.acked.includes(e.id) ? [i] : []));
  assert.deepEqual(
    acked,
    Array.from({ length: 10 }, (_, i) => i),
    'the batches before the failed one are acked',
  );
  assert.deepEqual(
    dest.visible,
    Array.from({ length: 10 }, (_, i) => i),
    'nothing after the failed batch is visible',
  );
  assert.equal(tracked.nacked.size, 15);
  assert.match(tracked.nacked.get(all[10]?.id as string)?.message ?? '', /commit of 10 refused/);
  assert.match(tracked.nacked.get(all[24]?.id as string)?.message ?? '', /not written: an earlier batch failed \(commit of 10 refused\)/);
  assert.ok(dest.aborted.length > 0, 'no staged batch after the failed one was rolled back');
  assert.ok(
    dest.aborted.every((n) => n >= 15),
    'a batch before the failure was rolled back',
  );
  assert.deepEqual(tracked.doubleSettles, []);
  const failed = events.filter((e) => e.type === 'failed');
  assert.ok(failed.every((e) => e.type === 'failed' && e.retryable));
});

test('a batch that cannot be staged fails after the batch before it committed, which stays acked; messages sent again are written in order', async () => {
  let refuse = true;
  const dest = destination({ stageFails: (first) => refuse && first === 5 });
  const sink = pipelinedSink({ batchSize: 5, batchTimeMs: 1, concurrency: 2 }, dest.stage);
  const all = envelopes(15);
  const input = new Subject<Delivery>();
  const events = lastValueFrom(sink(input).pipe(toArray()));
  const first = trackedEnvelopes(all);
  for (const d of first.deliveries) input.next(d);
  await first.settled();
  assert.deepEqual(dest.visible, [0, 1, 2, 3, 4]);
  assert.equal(first.acked.length, 5);
  assert.equal(first.nacked.size, 10);

  refuse = false;
  const again = trackedEnvelopes(all.slice(5));
  for (const d of again.deliveries) input.next(d);
  await again.settled();
  input.complete();
  await events;
  assert.equal(again.acked.length, 10);
  assert.deepEqual(
    dest.visible,
    Array.from({ length: 15 }, (_, i) => i),
  );
});
