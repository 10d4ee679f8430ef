import { Observable } from 'rxjs';
import type { Logger } from 'pino';
import type { Counters } from '../core/component.ts';
import { createDelivery, type Delivery } from '../core/delivery.ts';
import { isFerryError } from '../core/errors.ts';
import type { BufferPolicy } from './config.ts';
import type { BufferStore, StoredMessage } from './store.ts';
import type { BufferWriter } from './writer.ts';

export interface CursorSourceOptions {
  readonly store: BufferStore;
  readonly writer: BufferWriter;
  readonly bridge: string;
  readonly sink: string;
  readonly policy: BufferPolicy;
  readonly logger: Logger;
  readonly counters: Counters;
}

/** A source reading one sink's view of a bridge's log; `stop` ends it after the current window. */
export interface CursorSource {
  readonly deliveries: Observable<Delivery>;
  stop(): void;
}

type Outcome = { ok: true } | { ok: false; error: Error };

const POLL_MS = 1000;

/**
 * Hands a sink the bridge's buffered messages in order, a window at a time, from the sink's
 * cursor. When the window is settled the cursor moves past every message acked before the
 * first failure. A retryable failure is tried again from there after a backoff that doubles
 * up to `retryMaxMs`, for ever; a permanent one dead-letters that message and moves on.
 */
export function cursorSource(options: CursorSourceOptions): CursorSource {
  const { store, writer, bridge, sink, policy, logger, counters } = options;
  let stopping = false;
  let wake: (() => void) | undefined;
  const interrupt = () => wake?.();
  const pause = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });

  const deliveries = new Observable<Delivery>((subscriber) => {
    let closed = false;
    const run = async () => {
      let cursor = store.cursor(bridge, sink);
      let attempts = 0;
      while (!stopping && !closed) {
        const window = store.read(bridge, cursor, policy.windowSize);
        if (window.length === 0) {
          // Woken by this process's commits; the poll finds rows another process added (`ferry buffer redrive`).
          await Promise.race([writer.appended(bridge), pause(POLL_MS)]);
          continue;
        }
        const outcomes = await Promise.all(window.map((message) => emit(message)));
        if (closed || !store.db.open) return;
        let last = cursor;
        let failure: { message: StoredMessage; error: Error } | undefined;
        for (let i = 0; i < window.length; i++) {
          const outcome = outcomes[i] as Outcome;
          if (!outcome.ok) {
            failure = { message: window[i] as StoredMessage, error: outcome.error };
            break;
          }
          last = (window[i] as StoredMessage).seq;
        }
        if (last > cursor) {
          store.commit(bridge, sink, last);
          counters.count('buffer.delivered', { bridge, sink }, window.findIndex((m) => m.seq === last) + 1);
          cursor = last;
          writer.released();
        }
        if (failure === undefined) {
          attempts = 0;
          continue;
        }
        attempts += 1;
        if (!retryable(failure.error)) {
          store.deadLetter(sink, failure.message, failure.error.message, attempts);
          counters.count('buffer.dead_letters', { bridge, sink });
          logger.error({ err: failure.error, id: failure.message.envelope.id, topic: failure.message.envelope.topic, sink }, 'rejected for good: moved to dead letters');
          cursor = failure.message.seq;
          attempts = 0;
          writer.released();
          continue;
        }
        const delay = Math.min(policy.retryMaxMs, policy.retryInitialMs * 2 ** Math.min(attempts - 1, 20));
        const jittered = Math.round(delay * (0.8 + Math.random() * 0.4));
        counters.count('buffer.retries', { bridge, sink });
        logger.warn({ err: failure.error, sink, attempt: attempts, retryInMs: jittered }, 'write failed; will retry');
        await pause(jittered);
      }
      subscriber.complete();
    };
    const emit = (message: StoredMessage) =>
      new Promise<Outcome>((resolve) => {
        subscriber.next(
          createDelivery(message.envelope, {
            onAck: () => resolve({ ok: true }),
            onNack: (error) => resolve({ ok: false, error }),
            onDoubleSettle: (attempted) => {
              counters.count('delivery.double_settle', { bridge, sink });
              logger.error({ id: message.envelope.id, attempted, sink }, 'bug: a delivery was settled twice');
            },
          }),
        );
      });
    run().catch((error: unknown) => subscriber.error(error));
    return () => {
      closed = true;
      interrupt();
    };
  });

  return {
    deliveries,
    stop: () => {
      stopping = true;
      interrupt();
    },
  };
}

/** Permanent unless the error says otherwise: a FerryError decides by `retryable`. */
function retryable(error: Error): boolean {
  return isFerryError(error) ? error.retryable : true;
}
