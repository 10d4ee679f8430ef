import { type MonoTypeOperatorFunction, filter } from 'rxjs';
import type { Message } from './define.ts';

/**
 * RxJS `filter` for messages that settles what it drops: a message the predicate refuses is
 * done at once (acked as handled), with no wait for the garbage collector.
 *
 * ```ts
 * messages.pipe(filterMessages((m) => m.json<{ celsius: number }>().celsius > 30), map((m) => m.to('hot')))
 * ```
 */
export function filterMessages<M extends Message>(predicate: (message: M, index: number) => boolean): MonoTypeOperatorFunction<M> {
  return filter((message: M, index: number) => {
    if (predicate(message, index)) return true;
    message.done();
    return false;
  });
}
