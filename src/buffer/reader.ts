import { Observable, type Subscriber } from 'rxjs';
import type { Logger } from 'pino';
import type { Counters } from '../core/component.ts';
import { createDeliveries, type Delivery } from '../core/delivery.ts';
import { backoffDelay } from '../core/backoff.ts';
import { isFerryError } from '../core/errors.ts';
import { failedSpanFields } from '../core/tracing.ts';
import { isCorruption } from '../sqlite/open-checked.ts';
import type { BufferPolicy } from './config.ts';
import type { BufferStore, StoredMessage } from './store.ts';
import type { BufferWriter } from './writer.ts';
import { ReadFailures } from './read-failures.ts';
import { sinkLogger } from './sink-logger.ts';
import { steadyNow } from '../core/steady-clock.ts';

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
  /**
   * Since when (steadyNow()) the sink has held a window without settling all of it; undefined
   * while it holds none. A value long past means the upstream does not answer.
   */
  readonly waitingSince: number | undefined;
}

type Outcome = { readonly ok: true } | { readonly ok: false; readonly error: Error };
/** A message refused for good, to be dead-lettered. */
interface Letter {
  readonly message: StoredMessage;
  readonly error: Error;
  readonly tries: number;
  readonly inLive: boolean;
}
const NO_LETTERS: Letter[] = [];
const OK: Outcome = { ok: true };

/**
 * A sink's verdict on one message alone (MESSAGE_INVALID, not retryable: say, a Kafka topic
 * rendered from it is invalid); other failures may be about the whole batch.
 */
function isRejection(error: Error): boolean {
  return isFerryError(error, 'MESSAGE_INVALID') && !error.retryable;
}

/** How long an idle reader waits before looking for rows another process added. */
const POLL_MS = 1000;

/**
 * A reader's loop threw: the sink's deliveries end with the error. A sink's own failures come
 * back as nacks, so what throws here is a statement on the buffer, and SQLITE_CORRUPT met by it
 * is the buffer's: the writer marks it, stops acknowledging and asks for a restart.
 */
export function readerFailed(writer: BufferWriter, sink: string, subscriber: Subscriber<Delivery>, error: unknown): void {
  if (isCorruption(error)) writer.corrupted(error, `a read for sink ${sink}`);
  subscriber.error(error);
}

/**
 * Hands a sink the bridge's buffered messages in order, a window at a time, from the sink's
 * cursor. When a window is settled the cursor moves past every message acked before the
 * first failure. A retryable failure is tried again from there after a backoff that doubles
 * up to `retryMaxMs`, for ever; a permanent one dead-letters that message and moves on (found
 * by handing the rest over one at a time, unless the sink named it with MESSAGE_INVALID).
 *
 * Under `replay: live-first`, a sink found more than a window behind splits its log at the
 * tail: messages after the split (live) are handed first, and the backlog before it follows
 * at most `backlogRatePerSec`, until it is delivered and the two cursors merge again.
 */
export function cursorSource(options: CursorSourceOptions): CursorSource {
  const { store, writer, bridge, sink, policy, counters } = options;
  const logger = sinkLogger(options.logger, sink);
  let stopping = false;
  let waitingSince: number | undefined;
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
    // One pending wait for an append at a time, however often an idle reader polls: a new
    // wait per poll would pile up in the writer until the bridge got a message again.
    let appended: Promise<void> | undefined;
    const nextAppend = () => (appended ??= writer.appended(bridge).then(() => void (appended = undefined)));
    let closed = false;
    const live = () => !stopping && !closed;

    /** Hands over a window; resolves with each message's outcome once all are settled. */
    const handOver = (window: readonly StoredMessage[]) =>
      new Promise<Outcome[]>((resolve) => {
        const outcomes = new Array<Outcome>(window.length);
        let remaining = window.length;
        const settled = (index: number, outcome: Outcome) => {
          outcomes[index] = outcome;
          remaining -= 1;
          if (remaining > 0) return;
          waitingSince = undefined;
          resolve(outcomes);
        };
        waitingSince = steadyNow();
        const deliveries = createDeliveries(
          window.map((m) => m.envelope),
          {
            onAck: (index) => settled(index, OK),
            onNack: (index, error) => settled(index, { ok: false, error }),
            onDoubleSettle: (index, attempted) => {
              counters.count('delivery.double_settle', { bridge, sink });
              logger.error({ id: (window[index] as StoredMessage).envelope.id, attempted }, 'bug: a delivery was settled twice');
            },
          },
        );
        for (const delivery of deliveries) subscriber.next(delivery);
      });

    const deadLetter = ({ message, error, tries, inLive }: Letter) => {
      store.deadLetter(sink, message, error.message, tries, inLive);
      counters.count('buffer.dead_letters', { bridge, sink });
      logger.error({ err: error, id: message.envelope.id, topic: message.envelope.topic, ...failedSpanFields(error) }, 'rejected for good: moved to dead letters');
    };
    /**
     * Hands over one window and waits for it to settle. Returns the last seq confirmed in
     * order (or undefined), the messages refused for good (to dead-letter before the cursor
     * moves past them) and whether a failure is to be tried again.
     */
    let attempts = 0;
    /**
     * While positive, messages are handed over one at a time (isolating a permanent failure).
     * The Kafka source does the same search for bridges without a buffer (the retry round in
     * kafka/assigned-partition.ts): the idea is shared, the loops are not (a window pulled from
     * a cursor here, offsets pushed by a partition there), and both run the conformance cases.
     */
    let isolate = 0;
    const windowSize = () => (isolate > 0 ? 1 : policy.windowSize);
    // Device-to-upstream latency: each message's age once its window is confirmed.
    const ages = counters.histogram?.('sink.message_age_seconds', { bridge, sink });
    const deliver = async (window: readonly StoredMessage[], inLive: boolean) => {
      const outcomes = await handOver(window);
      if (closed || !store.isOpen) return { done: false as const };
      const now = Date.now();
      if (isolate > 0 && (outcomes[0] as Outcome).ok) isolate -= 1;
      let confirmed: number | undefined;
      let letters: Letter[] = NO_LETTERS;
      let index = 0;
      for (; index < window.length; index++) {
        const outcome = outcomes[index] as Outcome;
        const message = window[index] as StoredMessage;
        if (!outcome.ok) {
          if (!isRejection(outcome.error)) break;
          // The sink refused this message alone and wrote the rest: no search needed.
          if (letters === NO_LETTERS) letters = [];
          letters.push({ message, error: outcome.error, tries: 1, inLive });
          isolate = 0;
        } else ages?.record((now - message.envelope.timestamp) / 1000);
        confirmed = message.seq;
      }
      if (index > letters.length) counters.count('buffer.delivered', { bridge, sink }, index - letters.length);
      if (index === window.length) {
        attempts = 0;
        return { done: true as const, confirmed, letters, failed: false };
      }
      const message = window[index] as StoredMessage;
      const { error } = outcomes[index] as { ok: false; error: Error };
      attempts += 1;
      if (!(isFerryError(error) ? error.retryable : true)) {
        if (window.length > 1) {
          // A sink fails a whole batch for one bad message: find it by sending the rest alone.
          isolate = window.length - index;
          attempts = 0;
          return { done: true as const, confirmed, letters, failed: false };
        }
        const found: Letter = { message, error, tries: attempts, inLive };
        attempts = 0;
        // Found it: back to whole windows (another bad message starts a new search).
        isolate = 0;
        return { done: true as const, confirmed: message.seq, letters: [...letters, found], failed: false };
      }
      const jittered = backoffDelay({ initialMs: policy.retryInitialMs, maxMs: policy.retryMaxMs, jitter: 0.2 }, attempts);
      counters.count('buffer.retries', { bridge, sink });
      logger.warn({ err: error, attempt: attempts, retryInMs: jittered, ...failedSpanFields(error) }, 'write failed; will retry');
      return { done: true as const, confirmed, letters, failed: true, retryInMs: jittered };
    };

    let state = store.cursorState(bridge, sink);
    /**
     * What the sink settled of a window whose writing failed (a full disk): written first at the
     * next try, so that the window is not handed over again.
     */
    let unwritten: { readonly live: boolean; readonly seq: number | undefined; readonly letters: Letter[] } | undefined;
    /** Writes what the sink settled of a window: its dead letters, then the cursor's move past them. */
    const settleWindow = (live: boolean, seq: number | undefined, letters: Letter[]) => {
      try {
        for (; letters.length > 0; letters.shift()) deadLetter(letters[0] as Letter);
        if (seq === undefined) return;
        if (live) store.commitLive(bridge, sink, seq);
        else store.commit(bridge, sink, seq);
      } catch (error) {
        unwritten = { live, seq, letters };
        throw error;
      }
    };
    /** Delivers a window at the sink's cursor and moves the cursor; false once unsubscribed. */
    const deliverInOrder = async (window: readonly StoredMessage[]): Promise<boolean> => {
      const result = await deliver(window, false);
      if (!result.done) return false;
      settleWindow(false, result.confirmed, result.letters);
      state = store.cursorState(bridge, sink);
      if (result.failed) await pause(result.retryInMs ?? 0);
      return true;
    };

    const failures = new ReadFailures(policy, logger, counters);
    let tokens = 0;
    let refilled = performance.now();
    /** One read and delivery of a window (or a wait for messages); false once unsubscribed. */
    const turn = async (): Promise<boolean> => {
      if (failures.count > 0) {
        if (unwritten !== undefined) {
          const { live, seq, letters } = unwritten;
          unwritten = undefined;
          settleWindow(live, seq, letters);
        }
        state = store.cursorState(bridge, sink);
      }
      if (state.liveMark === null) {
        const window = store.read(bridge, state.seq, windowSize());
        if (window.length === 0) {
          // Woken by this process's commits; the poll finds rows another process added (`ferry buffer redrive`).
          await Promise.race([nextAppend(), pause(POLL_MS)]);
          return true;
        }
        if (policy.replay === 'live-first' && isolate === 0 && window.length === policy.windowSize && store.tail(bridge) > (window.at(-1) as StoredMessage).seq) {
          const mark = store.tail(bridge);
          store.startLive(bridge, sink, mark);
          state = store.cursorState(bridge, sink);
          counters.count('buffer.live_first.started', { bridge, sink });
          logger.info(
            { backlog: store.stats(bridge, { kept: true }).sinks.find((s) => s.sink === sink)?.pending, ratePerSec: policy.backlogRatePerSec },
            'sink is behind: new messages first, backlog behind them',
          );
          return true;
        }
        return deliverInOrder(window);
      }

      // Live-first: new messages first, then as much backlog as the rate allows.
      const mark = state.liveMark;
      const fresh = store.read(bridge, state.liveSeq ?? mark, windowSize());
      if (fresh.length > 0) {
        const result = await deliver(fresh, true);
        if (!result.done) return false;
        settleWindow(true, result.confirmed, result.letters);
        state = store.cursorState(bridge, sink);
        if (result.failed) {
          await pause(result.retryInMs ?? 0);
          return true;
        }
      }
      const now = performance.now();
      tokens = Math.min(policy.windowSize, tokens + ((now - refilled) / 1000) * policy.backlogRatePerSec);
      refilled = now;
      const take = Math.min(Math.floor(tokens), windowSize());
      if (take === 0) {
        if (fresh.length === 0) await Promise.race([nextAppend(), pause(Math.ceil(((1 - tokens) / policy.backlogRatePerSec) * 1000))]);
        return true;
      }
      const backlog = store.read(bridge, state.seq, take).filter((m) => m.seq <= mark);
      if (backlog.length === 0) {
        store.endLive(bridge, sink);
        state = store.cursorState(bridge, sink);
        counters.count('buffer.live_first.caught_up', { bridge, sink });
        logger.info('backlog delivered: back to arrival order');
        return true;
      }
      tokens -= backlog.length;
      return deliverInOrder(backlog);
    };

    const run = async () => {
      while (live()) {
        let going: boolean;
        try {
          going = await turn();
        } catch (error) {
          // The window is read again from the cursor after a backoff (one the sink confirmed
          // whose cursor did not move is not written again: its move is tried first).
          if (!ReadFailures.retryable(error, store.isOpen)) throw error;
          await pause(failures.failed(error));
          continue;
        }
        failures.worked();
        if (!going) return;
      }
      subscriber.complete();
    };
    run().catch((error: unknown) => readerFailed(writer, sink, subscriber, error));
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
    get waitingSince() {
      return waitingSince;
    },
  };
}
