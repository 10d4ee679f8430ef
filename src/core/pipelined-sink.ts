import { type Observable, defer, map, mergeMap, from } from 'rxjs';
import { batchBy } from './batch-by.ts';
import { type BatchOptions, type BatchResult, earlierBatchFailed, failBatch, settleWritten } from './batching-sink.ts';
import { asError } from './errors.ts';
import type { Delivery } from './delivery.ts';
import type { Sink } from './stream.ts';
import type { SinkTracing, SpanIds } from './tracing.ts';

/**
 * A batch written to the destination but not yet visible there: a transaction that ran its
 * statements and waits for its commit. The pipeline calls exactly one of the two, once.
 */
export interface StagedBatch {
  /** Makes the batch durable and visible (COMMIT); resolves with what it refused alone. */
  commit(): Promise<BatchResult | void>;
  /** Undoes it (ROLLBACK) and gives back what it held. Must not reject. */
  abort(): Promise<void>;
}

export interface PipelineOptions extends BatchOptions {
  /** Most batches in flight at once (staged or committing); 1 writes one batch at a time. */
  readonly concurrency: number;
}

type Outcome = { readonly result: BatchResult | void } | { readonly error: Error };

/**
 * A batching sink whose writes overlap: up to `concurrency` batches are staged at once, while
 * commits happen one at a time in the order the batches were formed, each only after the one
 * before it committed. A batch is acked after its own commit. It keeps `batchingSink`'s
 * contract: when a batch fails, the batches formed after it that are staged are aborted,
 * never committed, and nacked with every batch formed from deliveries that had arrived by
 * then, so the destination never holds a message after an earlier one it refused.
 *
 * `stage` decides how much of its work may overlap with that of the batches before it (the
 * postgres sink renders a batch and sends its insert at once, on the one connection that runs
 * its batches' statements in order; a batch's commit may then find it committed already, with
 * the batches sent before it in one transaction).
 */
export function pipelinedSink(options: PipelineOptions, stage: (batch: readonly Delivery[]) => Promise<StagedBatch>, tracing?: SinkTracing): Sink {
  return (input: Observable<Delivery>) => {
    let arrived = 0;
    let failedThrough = 0;
    let lastError: Error | undefined;
    // Resolves when the batch formed last was committed or failed (a failure sets failedThrough
    // past every batch formed by then, so the batches after it need no more than that).
    let previous: Promise<void> = Promise.resolve();

    const run = async (batch: readonly Delivery[], first: number, before: Promise<void>, done: () => void): Promise<Outcome> => {
      const earlierFailed = () => (first <= failedThrough && lastError !== undefined ? earlierBatchFailed(lastError) : undefined);
      const failed = (error: Error): Outcome => {
        failedThrough = arrived;
        lastError = error;
        return { error };
      };
      try {
        const skipped = earlierFailed();
        if (skipped !== undefined) {
          await before;
          return { error: skipped };
        }
        let staged: StagedBatch | undefined;
        let stageError: Error | undefined;
        try {
          staged = await stage(batch);
        } catch (cause) {
          stageError = asError(cause);
        }
        await before;
        if (staged === undefined) return failed(stageError as Error);
        const notWritten = earlierFailed();
        if (notWritten !== undefined) {
          await staged.abort().catch(() => {});
          return { error: notWritten };
        }
        try {
          return { result: await staged.commit() };
        } catch (cause) {
          return failed(asError(cause));
        }
      } finally {
        done();
      }
    };

    return input.pipe(
      map((delivery) => ({ delivery, n: ++arrived })),
      batchBy({ count: options.batchSize, timeMs: options.batchTimeMs, bytes: options.batchBytes, sizeOf: (t) => t.delivery.envelope.payload.byteLength }),
      // mergeMap projects its values in order (those beyond the limit wait in a queue), so each
      // batch takes the promise of the one formed before it.
      mergeMap((tagged) => {
        const batch = tagged.map((t) => t.delivery);
        const before = previous;
        let done!: () => void;
        previous = new Promise<void>((resolve) => (done = resolve));
        const started = performance.now();
        const first = (tagged[0] as { n: number }).n;
        // A traced write throws its failure inside the span (which records it), then is an outcome again.
        let span: SpanIds | undefined;
        const traced = async (ids: SpanIds | undefined): Promise<Outcome> => {
          span = ids;
          const outcome = await run(batch, first, before, done);
          if ('error' in outcome) throw outcome.error;
          return outcome;
        };
        const write = () => (tracing === undefined ? run(batch, first, before, done) : tracing.batch(batch, traced).catch((error: Error): Outcome => ({ error })));
        return defer(write).pipe(mergeMap((outcome) => from('error' in outcome ? [failBatch(batch, outcome.error, span)] : settleWritten(batch, outcome.result, started, span))));
      }, options.concurrency),
    );
  };
}
