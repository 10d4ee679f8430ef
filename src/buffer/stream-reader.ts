import { Observable } from 'rxjs';
import { createDelivery, type Delivery } from '../core/delivery.ts';
import { isFerryError } from '../core/errors.ts';
import type { CursorSource, CursorSourceOptions } from './reader.ts';
import { Signal } from './signal.ts';
import type { StoredMessage } from './store.ts';

/** A cursor handing messages over continuously. */
export interface StreamCursor extends CursorSource {
  /** True while reading waits because `windowSize` messages are handed over and not settled in order. */
  readonly full: boolean;
  /**
   * Stops reading and ignores every settle from now on, so that the cursor does not move:
   * what is handed over and not confirmed stays in the buffer for the next reader.
   */
  detach(): void;
  /** Messages handed over and not yet behind the cursor. */
  readonly inFlight: number;
}

interface Entry {
  readonly message: StoredMessage;
  outcome: 'pending' | 'acked' | 'retry' | 'dead';
  attempts: number;
  error?: Error;
}

/** Rows read at once; reading yields to the event loop between reads. */
const READ_CHUNK = 500;
/** How long an idle reader waits before looking for rows another process added. */
const POLL_MS = 1000;

/**
 * Hands a consumer the bridge's buffered messages one by one, in order, without waiting for
 * earlier ones to settle: up to `windowSize` messages are out at once. This suits a consumer
 * that holds messages for a while (a handler aggregating over a time window), which the
 * window-at-a-time `cursorSource` would starve.
 *
 * Messages settle in any order; the cursor moves over the settled prefix. A retryable nack
 * sends that message again after a backoff doubling from `retryInitialMs` up to `retryMaxMs`
 * (reading pauses meanwhile), so it may come after messages that arrived later; a permanent
 * nack dead-letters it. `stop` ends the stream at once; what is settled afterwards still
 * moves the cursor, and what is not is delivered again at the next start. Live-first replay
 * is not applied: messages come in arrival order.
 */
export function streamCursor(options: CursorSourceOptions): StreamCursor {
  const { store, writer, bridge, sink, policy, logger, counters } = options;
  let stopping = false;
  let full = false;
  let inFlight = 0;
  /** Set by detach: no settle of any run moves the cursor any more. */
  let abandoned = false;
  const wake = new Signal();

  const deliveries = new Observable<Delivery>((subscriber) => {
    /** Set when unsubscribed before completing: settles of this run are ignored from then on. */
    let detached = false;
    let completed = false;
    const entries: Entry[] = [];
    let head = 0;
    let readSeq = store.cursor(bridge, sink);
    const retries: Entry[] = [];
    let retryAt = 0;
    let sweepQueued = false;
    // One pending wait on each signal at a time, however often the loop goes round.
    let appended: Promise<void> | undefined;
    let woken: Promise<void> | undefined;
    const nextAppend = () => (appended ??= writer.appended(bridge).then(() => void (appended = undefined)));
    const nextWake = () => (woken ??= wake.wait().then(() => void (woken = undefined)));

    const pause = (ms: number) => {
      let timer: NodeJS.Timeout | undefined;
      return {
        done: new Promise<void>((resolve) => (timer = setTimeout(resolve, ms))),
        cancel: () => clearTimeout(timer),
      };
    };

    const sweep = () => {
      sweepQueued = false;
      if (detached || abandoned || !store.db.open) return;
      let confirmed: number | undefined;
      let delivered = 0;
      while (head < entries.length) {
        const entry = entries[head] as Entry;
        if (entry.outcome === 'acked') {
          delivered += 1;
        } else if (entry.outcome === 'dead') {
          const error = entry.error as Error;
          // Everything before it is settled: this also moves the cursor over them.
          store.deadLetter(sink, entry.message, error.message, entry.attempts);
          counters.count('buffer.dead_letters', { bridge, sink });
          logger.error({ err: error, id: entry.message.envelope.id, topic: entry.message.envelope.topic, sink }, 'rejected for good: moved to dead letters');
        } else {
          break;
        }
        confirmed = entry.message.seq;
        head += 1;
      }
      if (head > 1024 && head * 2 > entries.length) {
        entries.splice(0, head);
        head = 0;
      }
      inFlight = entries.length - head;
      if (delivered > 0) counters.count('buffer.delivered', { bridge, sink }, delivered);
      if (confirmed === undefined) return;
      store.commit(bridge, sink, confirmed);
      writer.released();
      wake.notify();
    };
    const scheduleSweep = () => {
      if (sweepQueued) return;
      sweepQueued = true;
      // A sink acks its batch in one loop: one commit for all of them.
      queueMicrotask(sweep);
    };

    const hand = (entry: Entry) => {
      entry.outcome = 'pending';
      subscriber.next(
        createDelivery(entry.message.envelope, {
          onAck: () => {
            if (detached || abandoned) return;
            entry.outcome = 'acked';
            scheduleSweep();
          },
          onNack: (error) => {
            if (detached || abandoned) return;
            entry.attempts += 1;
            if (isFerryError(error) && !error.retryable) {
              entry.outcome = 'dead';
              entry.error = error;
              scheduleSweep();
              return;
            }
            entry.outcome = 'retry';
            const delay = Math.min(policy.retryMaxMs, policy.retryInitialMs * 2 ** Math.min(entry.attempts - 1, 20));
            const jittered = Math.round(delay * (0.8 + Math.random() * 0.4));
            if (retries.length === 0) logger.warn({ err: error, sink, attempt: entry.attempts, retryInMs: jittered }, 'not handled; will deliver again');
            retries.push(entry);
            retryAt = Math.max(retryAt, Date.now() + jittered);
            counters.count('buffer.retries', { bridge, sink });
            wake.notify();
          },
          onDoubleSettle: (attempted) => {
            counters.count('delivery.double_settle', { bridge, sink });
            logger.error({ id: entry.message.envelope.id, attempted, sink }, 'bug: a delivery was settled twice');
          },
        }),
      );
    };

    const run = async () => {
      // Let everything that subscribes in this turn be in place before the first message.
      await Promise.resolve();
      while (!stopping && !detached) {
        if (retries.length > 0) {
          const wait = retryAt - Date.now();
          if (wait > 0) {
            const timer = pause(wait);
            await Promise.race([timer.done, nextWake()]);
            timer.cancel();
            continue;
          }
          for (const entry of retries.splice(0)) hand(entry);
          continue;
        }
        const room = policy.windowSize - (entries.length - head);
        full = room <= 0;
        if (!full) {
          const rows = store.read(bridge, readSeq, Math.min(room, READ_CHUNK));
          if (rows.length > 0) {
            readSeq = (rows.at(-1) as StoredMessage).seq;
            for (const message of rows) {
              const entry: Entry = { message, outcome: 'pending', attempts: 0 };
              entries.push(entry);
              inFlight = entries.length - head;
              hand(entry);
              if (stopping || detached) break;
            }
            await new Promise((resolve) => setImmediate(resolve));
            continue;
          }
        }
        // Woken by appends, by settles (room, retries) and by stop; the poll finds rows another process added.
        const timer = pause(POLL_MS);
        await Promise.race([nextAppend(), nextWake(), timer.done]);
        timer.cancel();
      }
      full = false;
      if (!detached) {
        completed = true;
        subscriber.complete();
      }
    };
    run().catch((error: unknown) => subscriber.error(error));
    return () => {
      if (!completed) detached = true;
      wake.notify();
    };
  });

  return {
    deliveries,
    stop: () => {
      stopping = true;
      wake.notify();
    },
    detach: () => {
      abandoned = true;
      stopping = true;
      wake.notify();
    },
    get full() {
      return full;
    },
    get inFlight() {
      return inFlight;
    },
  };
}
