import { Observable, bufferTime, concatMap, defer, filter, map, catchError, of } from 'rxjs';
import type { Delivery } from './delivery.ts';
import type { Sink, SinkEvent } from './stream.ts';
import { isFerryError } from './errors.ts';

export interface BatchOptions {
  /** Most deliveries in one write. */
  readonly batchSize: number;
  /** Longest a delivery waits for its batch to fill, in milliseconds. */
  readonly batchTimeMs: number;
}

/**
 * Builds a sink from a batch writer. Deliveries are grouped by count and time, written one
 * batch at a time in arrival order, acked after `write` resolves and nacked with its error
 * when it rejects. Completion of the input flushes the last batch before completing.
 */
export function batchingSink(
  options: BatchOptions,
  write: (batch: readonly Delivery[]) => Promise<void> | void,
): Sink {
  return (input: Observable<Delivery>) =>
    input.pipe(
      bufferTime(options.batchTimeMs, null, options.batchSize),
      filter((batch) => batch.length > 0),
      concatMap((batch) => {
        const started = performance.now();
        return defer(async () => write(batch)).pipe(
          map((): SinkEvent => {
            let bytes = 0;
            for (const delivery of batch) {
              bytes += delivery.envelope.payload.byteLength;
              delivery.ack();
            }
            return { type: 'written', count: batch.length, bytes, durationMs: performance.now() - started };
          }),
          catchError((cause: unknown) => {
            const error = cause instanceof Error ? cause : new Error(String(cause));
            for (const delivery of batch) delivery.nack(error);
            const retryable = isFerryError(error) ? error.retryable : true;
            return of<SinkEvent>({ type: 'failed', count: batch.length, error, retryable });
          }),
        );
      }),
    );
}

/**
 * A sink that owns a resource (a connection, a database handle): opened when the sink is
 * subscribed, closed when it completes, errors or is unsubscribed.
 */
export function resourceSink<R>(open: () => R, close: (resource: R) => void, build: (resource: R) => Sink): Sink {
  return (input) =>
    new Observable<SinkEvent>((subscriber) => {
      const resource = open();
      const subscription = build(resource)(input).subscribe(subscriber);
      return () => {
        subscription.unsubscribe();
        close(resource);
      };
    });
}
