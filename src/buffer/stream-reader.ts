import { Observable } from 'rxjs';
import { createInternalDelivery, type Delivery, type SharedDeliveryHandlers } from '../core/delivery.ts';
import { backoffDelay } from '../core/backoff.ts';
import { isFerryError } from '../core/errors.ts';
import { InFlight } from '../core/in-flight.ts';
import { failedSpanFields } from '../core/tracing.ts';
import { type CursorSource, type CursorSourceOptions, readerFailed } from './reader.ts';
import { ReadFailures } from './read-failures.ts';
import { Signal } from './signal.ts';
import { sinkLogger } from './sink-logger.ts';
import type { StoredMessage } from './store.ts';

/** A cursor handing messages over continuously. */
export interface StreamCursor extends Omit<CursorSource, 'waitingSince'> {
  /** True while reading waits because `windowSize` messages are out and not settled. */
  readonly full: boolean;
  /**
   * Stops reading and ignores every settle from now on, so that the cursor does not move:
   * what is handed over and not confirmed stays in the buffer for the next reader.
   */
  detach(): void;
}

interface Entry {
  readonly message: StoredMessage;
  outcome: 'pending' | 'acked' | 'retry' | 'dead';
  attempts: number;
  error?: Error;
}

const isSettled = (entry: Entry): boolean => entry.outcome === 'acked' || entry.outcome === 'dead';

/** Rows read at once; reading yields to the event loop between reads. */
const READ_CHUNK = 500;
/** How long an idle reader waits before looking for rows another process added. */
const POLL_MS = 1000;

/**
 * Hands a consumer the bridge's buffered messages one by one, in order, without waiting for
 * earlier ones to settle: up to `windowSize` unsettled messages are out at once. This suits a
 * consumer that holds messages for a while (a handler aggregating over a time window, or
 * keeping a device's last reading), which the window-at-a-time `cursorSource` would starve.
 *
 * Messages settle in any order, each on its own: one the consumer holds for a long time does
 * not hold back the ones after it (issue 18). The cursor stays just before the oldest
 * unsettled message; messages settled ahead of it leave the log at once (acked) or go to the
 * dead letters (rejected for good), so that a restart delivers only what is unsettled. This
 * needs the cursor to be the bridge's only one. A retryable nack sends that message again
 * after a backoff doubling from `retryInitialMs` up to `retryMaxMs` (reading pauses
 * meanwhile), so it may come after messages that arrived later. `stop` ends the stream at
 * once; what is settled afterwards still counts, and what is not is delivered again at the
 * next start. Live-first replay is not applied: messages come in arrival order.
 */
export function streamCursor(options: CursorSourceOptions): StreamCursor {
  const { store, bridge, sink, policy, counters } = options;
  const logger = sinkLogger(options.logger, sink);
  let stopping = false;
  let full = false;
  /** Set by detach: no settle of any run moves the cursor any more. */
  let abandoned = false;
  const wake = new Signal();
  const ages = counters.histogram?.('sink.message_age_seconds', { bridge, sink });

  const deliveries = new Observable<Delivery>((subscriber) => {
    /** Set when unsubscribed before completing: settles of this run are ignored from then on. */
    let detached = false;
    let completed = false;
    /** Unsettled messages, oldest first (handed in seq order; a retry keeps its place). */
    const unsettled = new InFlight<Entry>(isSettled);
    /** Settled since the last sweep. */
    let acked: StoredMessage[] = [];
    let rejected: Entry[] = [];
    let readSeq = store.cursor(bridge, sink);
    let committed = readSeq;
    const retries: Entry[] = [];
    /** When the retries are due, by the monotonic clock: a step of the wall clock neither holds them back nor hurries them. */
    let retryAt = 0;
    let sweepQueued = false;
    // One pending wait on each signal at a time, however often the loop goes round.
    let appended: Promise<void> | undefined;
    let woken: Promise<void> | undefined;
    const nextAppend = () => (appended ??= options.writer.appended(bridge).then(() => void (appended = undefined)));
    const nextWake = () => (woken ??= wake.wait().then(() => void (woken = undefined)));

    const pause = (ms: number) => {
      let timer: NodeJS.Timeout | undefined;
      return {
        done: new Promise<void>((resolve) => (timer = setTimeout(resolve, ms))),
        cancel: () => clearTimeout(timer),
      };
    };

    /** Sweeps and reads of the buffer that failed in a row, each run of them logged once. */
    const sweepFailures = new ReadFailures(policy, logger, counters);
    const readFailures = new ReadFailures(policy, logger, counters);
    let retrySweep: NodeJS.Timeout | undefined;
    const deadLettered = (entry: Entry) => {
      const error = entry.error as Error;
      counters.count('buffer.dead_letters', { bridge, sink });
      logger.error({ err: error, id: entry.message.envelope.id, topic: entry.message.envelope.topic, ...failedSpanFields(error) }, 'rejected for good: moved to dead letters');
    };
    const sweep = () => {
      sweepQueued = false;
      if (detached || abandoned || !store.isOpen) return;
      const settledAcked = acked;
      const settledRejected = rejected;
      acked = [];
      rejected = [];
      // Just before the oldest unsettled message, or everything read when none is.
      const oldest = unsettled.first();
      const cursor = oldest === undefined ? readSeq : oldest.message.seq - 1;
      const ahead: StoredMessage[] = [];
      const deadAhead: { message: StoredMessage; reason: string; attempts: number }[] = [];
      let at = 0;
      let aheadSettled = false;
      try {
        for (; at < settledRejected.length; at++) {
          const entry = settledRejected[at] as Entry;
          const reason = (entry.error as Error).message;
          if (entry.message.seq > cursor) deadAhead.push({ message: entry.message, reason, attempts: entry.attempts });
          else {
            store.deadLetter(sink, entry.message, reason, entry.attempts);
            deadLettered(entry);
          }
        }
        for (const message of settledAcked) if (message.seq > cursor) ahead.push(message);
        if (ahead.length > 0 || deadAhead.length > 0) store.settleAhead(bridge, sink, ahead, deadAhead);
        aheadSettled = true;
        for (const entry of settledRejected) if (entry.message.seq > cursor) deadLettered(entry);
        if (settledAcked.length > 0) {
          counters.count('buffer.delivered', { bridge, sink }, settledAcked.length);
          const now = Date.now();
          for (const message of settledAcked) ages?.record((now - message.envelope.timestamp) / 1000);
        }
        if (cursor > committed) {
          store.commit(bridge, sink, cursor);
          committed = cursor;
        }
      } catch (error) {
        if (!ReadFailures.retryable(error, store.isOpen)) throw error;
        // What was not recorded is swept again after a backoff (the cursor is worked out anew then).
        rejected = settledRejected.filter((entry, i) => i >= at || (!aheadSettled && entry.message.seq > cursor)).concat(rejected);
        if (!aheadSettled) acked = settledAcked.concat(acked);
        retrySweep ??= setTimeout(() => {
          retrySweep = undefined;
          queueSweep();
        }, sweepFailures.failed(error));
        retrySweep.unref();
        return;
      }
      sweepFailures.worked();
      wake.notify();
    };
    const sweepOrFail = () => {
      try {
        sweep();
      } catch (error) {
        readerFailed(options.writer, sink, subscriber, error);
      }
    };
    const queueSweep = () => {
      // After a failed sweep, the next waits for its backoff.
      if (sweepQueued || retrySweep !== undefined) return;
      sweepQueued = true;
      // A sink acks its batch in one loop: one commit for all of them.
      queueMicrotask(sweepOrFail);
    };
    const settle = (entry: Entry) => {
      unsettled.settled();
      if (entry.outcome === 'dead') rejected.push(entry);
      else acked.push(entry.message);
      queueSweep();
    };

    // One set of handlers for every delivery, each given its entry (no closures per message).
    const settlement: SharedDeliveryHandlers<Entry> = {
      onAck: (entry) => {
        if (detached || abandoned) return;
        entry.outcome = 'acked';
        settle(entry);
      },
      onNack: (entry, error) => {
        if (detached || abandoned) return;
        entry.attempts += 1;
        if (isFerryError(error) && !error.retryable) {
          entry.outcome = 'dead';
          entry.error = error;
          settle(entry);
          return;
        }
        entry.outcome = 'retry';
        const jittered = backoffDelay({ initialMs: policy.retryInitialMs, maxMs: policy.retryMaxMs, jitter: 0.2 }, entry.attempts);
        if (retries.length === 0) logger.warn({ err: error, attempt: entry.attempts, retryInMs: jittered, ...failedSpanFields(error) }, 'not handled; will deliver again');
        retries.push(entry);
        retryAt = Math.max(retryAt, performance.now() + jittered);
        counters.count('buffer.retries', { bridge, sink });
        wake.notify();
      },
      onDoubleSettle: (entry, attempted) => {
        counters.count('delivery.double_settle', { bridge, sink });
        logger.error({ id: entry.message.envelope.id, attempted }, 'bug: a delivery was settled twice');
      },
    };
    const hand = (entry: Entry) => {
      entry.outcome = 'pending';
      subscriber.next(createInternalDelivery(entry.message.envelope, settlement, entry));
    };

    const run = async () => {
      // Let everything that subscribes in this turn be in place before the first message.
      await Promise.resolve();
      while (!stopping && !detached) {
        if (retries.length > 0) {
          const wait = retryAt - performance.now();
          if (wait > 0) {
            const timer = pause(wait);
            await Promise.race([timer.done, nextWake()]);
            timer.cancel();
            continue;
          }
          for (const entry of retries.splice(0)) hand(entry);
          continue;
        }
        const room = policy.windowSize - unsettled.size;
        full = room <= 0;
        if (!full) {
          let rows: StoredMessage[];
          try {
            rows = store.read(bridge, readSeq, Math.min(room, READ_CHUNK));
          } catch (error) {
            if (!ReadFailures.retryable(error, store.isOpen)) throw error;
            const timer = pause(readFailures.failed(error));
            await Promise.race([timer.done, nextWake()]);
            timer.cancel();
            continue;
          }
          readFailures.worked();
          if (rows.length > 0) {
            readSeq = (rows.at(-1) as StoredMessage).seq;
            for (const message of rows) {
              const entry: Entry = { message, outcome: 'pending', attempts: 0 };
              unsettled.add(entry);
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
    run().catch((error: unknown) => readerFailed(options.writer, sink, subscriber, error));
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
  };
}
