import { Observable, type OperatorFunction, type Subscription, asyncScheduler } from 'rxjs';

export interface BatchLimits<T> {
  /** Most items in one batch. */
  readonly count: number;
  /** Longest the first item of a batch waits for the batch to fill, in milliseconds. */
  readonly timeMs: number;
  /** Most bytes in one batch (an item larger than this goes alone); no limit when absent. */
  readonly bytes?: number | undefined;
  /** Size of one item, when `bytes` is set. */
  readonly sizeOf?: (item: T) => number;
}

/**
 * Groups items into arrays by count, bytes and time, like `bufferTime(timeMs, null, count)`
 * plus a byte limit: a batch is emitted when it holds `count` items, when the next item would
 * take it past `bytes`, or `timeMs` after its first item arrived. Completion emits the last,
 * partial batch; empty batches are never emitted.
 */
export function batchBy<T>(limits: BatchLimits<T>): OperatorFunction<T, T[]> {
  const sizeOf = limits.sizeOf ?? (() => 0);
  const maxBytes = limits.bytes ?? Number.POSITIVE_INFINITY;
  return (input) =>
    new Observable<T[]>((subscriber) => {
      let batch: T[] = [];
      let bytes = 0;
      let timer: Subscription | undefined;
      const flush = () => {
        timer?.unsubscribe();
        timer = undefined;
        if (batch.length === 0) return;
        const out = batch;
        batch = [];
        bytes = 0;
        subscriber.next(out);
      };
      const subscription = input.subscribe({
        next: (item) => {
          const size = sizeOf(item);
          if (batch.length > 0 && bytes + size > maxBytes) flush();
          batch.push(item);
          bytes += size;
          if (batch.length >= limits.count || bytes >= maxBytes) flush();
          else if (timer === undefined) timer = asyncScheduler.schedule(flush, limits.timeMs);
        },
        error: (error: unknown) => {
          timer?.unsubscribe();
          subscriber.error(error);
        },
        complete: () => {
          flush();
          subscriber.complete();
        },
      });
      return () => {
        timer?.unsubscribe();
        subscription.unsubscribe();
      };
    });
}
