import { Observable, concatMap, defer, map, mergeMap, catchError, from, of } from 'rxjs';
import { batchBy } from './batch-by.ts';
import type { Delivery } from './delivery.ts';
import type { Sink, SinkEvent } from './stream.ts';
import { FerryError, asError, isFerryError } from './errors.ts';
import { type SinkTracing, type SpanIds, noteFailedSpan } from './tracing.ts';

export interface BatchOptions {
  /** Most deliveries in one write. */
  readonly batchSize: number;
  /** Longest a delivery waits for its batch to fill, in milliseconds. */
  readonly batchTimeMs: number;
  /** Most payload bytes in one write (a larger message goes alone); no limit when absent. */
  readonly batchBytes?: number;
}

/**
 * What a write may report besides success: the deliveries it refused one by one because the
 * message itself can never be written (it is nacked with that error; the others of the batch
 * were written and are acked). Throwing instead fails the whole batch.
 */
export interface BatchResult {
  readonly rejected: ReadonlyMap<Delivery, Error>;
}

/**
 * Builds a sink from a batch writer. Deliveries are grouped by count, bytes and time, written one
 * batch at a time in arrival order, acked after `write` resolves and nacked with its error
 * when it rejects. A failed batch also fails, unwritten, every batch formed from deliveries
 * that had arrived by then, so the destination never gets a message after an earlier one it
 * refused (the source sends them again, in order). Completion of the input flushes the last
 * batch before completing.
 */
export function batchingSink(options: BatchOptions, write: (batch: readonly Delivery[]) => Promise<BatchResult | void> | BatchResult | void, tracing?: SinkTracing): Sink {
  return (input: Observable<Delivery>) => {
    let arrived = 0;
    let failedThrough = 0;
    let lastError: Error | undefined;
    return input.pipe(
      map((delivery) => ({ delivery, n: ++arrived })),
      batchBy({ count: options.batchSize, timeMs: options.batchTimeMs, bytes: options.batchBytes, sizeOf: (t) => t.delivery.envelope.payload.byteLength }),
      concatMap((tagged) => {
        const batch = tagged.map((t) => t.delivery);
        const fail = (error: Error) => of<SinkEvent>(failBatch(batch, error));
        if ((tagged[0] as { n: number }).n <= failedThrough && lastError !== undefined) return fail(earlierBatchFailed(lastError));
        const started = performance.now();
        // The batch span's ids when the write is traced: on its events and on its errors (logs name it).
        let span: SpanIds | undefined;
        const run = async () =>
          tracing === undefined
            ? write(batch)
            : tracing.batch(batch, async (ids) => {
                span = ids;
                return write(batch);
              });
        return defer(run).pipe(
          mergeMap((result) => from(settleWritten(batch, result, started, span))),
          catchError((cause: unknown) => {
            const error = asError(cause);
            failedThrough = arrived;
            lastError = error;
            return of<SinkEvent>(failBatch(batch, error, span));
          }),
        );
      }),
    );
  };
}

/** The error of a batch not written because an earlier one failed (its messages come again, in order). */
export function earlierBatchFailed(lastError: Error): FerryError {
  return new FerryError('SINK_WRITE_FAILED', `not written: an earlier batch failed (${lastError.message})`, { retryable: true, cause: lastError });
}

/**
 * Acks the deliveries of a written batch and nacks those `result` refused alone; the sink's
 * events for it (the time of the write since `started`, from performance.now()). `span`: the
 * write's span when it was traced, named by the events and noted against the refusals' errors.
 */
export function settleWritten(batch: readonly Delivery[], result: BatchResult | void, started: number, span?: SpanIds): SinkEvent[] {
  const rejected = result?.rejected ?? new Map<Delivery, Error>();
  let bytes = 0;
  let written = 0;
  for (const delivery of batch) {
    const error = rejected.get(delivery);
    if (error !== undefined) {
      noteFailedSpan(error, span);
      delivery.nack(error);
      continue;
    }
    bytes += delivery.envelope.payload.byteLength;
    written += 1;
    delivery.ack();
  }
  const events: SinkEvent[] = [];
  const ofSpan = span === undefined ? {} : { span };
  if (written > 0) events.push({ type: 'written', count: written, bytes, durationMs: performance.now() - started, ...ofSpan });
  const first = rejected.values().next();
  if (!first.done) events.push({ type: 'failed', count: rejected.size, error: first.value, retryable: false, ...ofSpan });
  return events;
}

/**
 * Nacks every delivery of a batch that was not written; the sink's event for it. `span`: the
 * failed write's span when it was traced, named by the event and noted against `error`.
 */
export function failBatch(batch: readonly Delivery[], error: Error, span?: SpanIds): SinkEvent {
  noteFailedSpan(error, span);
  for (const delivery of batch) delivery.nack(error);
  return { type: 'failed', count: batch.length, error, retryable: isFerryError(error) ? error.retryable : true, ...(span === undefined ? {} : { span }) };
}

/**
 * A batching sink that writes through a resource it owns (a connection, a database handle).
 * The resource is opened by the first write and, after a failed write, closed and opened
 * again by the next one, so a destination that comes back is used again. It is closed
 * when the sink completes, errors or is unsubscribed. `close` must not throw.
 */
export function resourceSink<R>(
  options: BatchOptions,
  open: () => R | Promise<R>,
  close: (resource: R) => void,
  write: (resource: R, batch: readonly Delivery[]) => Promise<BatchResult | void> | BatchResult | void,
  tracing?: SinkTracing,
): Sink {
  return (input) =>
    new Observable<SinkEvent>((subscriber) => {
      let resource: Promise<R> | undefined;
      const release = () => {
        const held = resource;
        resource = undefined;
        held?.then(close, () => {});
      };
      const sink = batchingSink(
        options,
        async (batch) => {
          try {
            resource ??= Promise.resolve().then(open);
            return await write(await resource, batch);
          } catch (error) {
            release();
            throw error;
          }
        },
        tracing,
      );
      const subscription = sink(input).subscribe(subscriber);
      return () => {
        subscription.unsubscribe();
        release();
      };
    });
}
