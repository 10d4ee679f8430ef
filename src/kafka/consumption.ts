import { Observable, type Subscriber } from 'rxjs';
import { backoffDelay } from '../core/backoff.ts';
import type { ComponentContext } from '../core/component.ts';
import { createDelivery, type Delivery } from '../core/delivery.ts';
import { createEnvelope, type Envelope } from '../core/envelope.ts';
import { describeError, isFerryError } from '../core/errors.ts';
import type { Source } from '../core/stream.ts';
import type { KafkaBatchControl, KafkaConsumer, KafkaInboundRecord } from './client.ts';
import { OffsetWindow } from './offset-window.ts';

export interface ConsumptionOptions {
  readonly topics: readonly string[];
  readonly maxInFlight: number;
  readonly retryBackoffMs: number;
  readonly stopTimeoutMs: number;
}

const MAX_RETRY_BACKOFF_MS = 60_000;
const RECONNECT_BACKOFF_MS = 5_000;
const COMMIT_RETRY_MS = 1_000;

/**
 * A source over a consumer group (see kafkaSource). Each subscription opens its own consumer
 * through `open`; unsubscribing stops fetching, waits up to `stopTimeoutMs` for the messages
 * in flight, commits what is contiguous and disconnects.
 */
export function consumeKafka(options: ConsumptionOptions, ctx: ComponentContext, open: () => KafkaConsumer): Source {
  return new Observable<Delivery>((subscriber) => {
    const consumption = new Consumption(options, ctx, open, subscriber);
    consumption.start();
    return () => consumption.stop();
  });
}

interface Partition {
  readonly topic: string;
  readonly partition: number;
  readonly window: OffsetWindow;
  /** The offset last committed by this member, if any. */
  committed: bigint | undefined;
  paused: boolean;
  /**
   * Messages a sink refused for now, waiting for the partition's next retry round; while any
   * wait, newly fetched messages are held back (`held`), so that the partition's order holds
   * through retries: the round hands over the refused ones in offset order, then the held ones.
   */
  readonly retry: Map<bigint, Refused>;
  held: { readonly offset: bigint; readonly envelope: Envelope }[];
  retryRound: boolean;
}

/** A message a sink refused; `alone` once it must be delivered by itself (it was refused for good with others). */
interface Refused {
  readonly envelope: Envelope;
  readonly attempt: number;
  readonly alone: boolean;
}

type Settled = 'done' | 'retry';

class Consumption {
  readonly #options: ConsumptionOptions;
  readonly #ctx: ComponentContext;
  readonly #open: () => KafkaConsumer;
  readonly #subscriber: Subscriber<Delivery>;
  readonly #component: string;
  readonly #partitions = new Map<string, Partition>();
  readonly #timers = new Set<NodeJS.Timeout>();
  #consumer: KafkaConsumer | undefined;
  #stopping = false;
  #committing: Promise<void> | undefined;
  #commitScheduled = false;
  /** Called whenever a window moved, while stop() waits for the windows to settle. */
  #onProgress: (() => void) | undefined;

  constructor(options: ConsumptionOptions, ctx: ComponentContext, open: () => KafkaConsumer, subscriber: Subscriber<Delivery>) {
    this.#options = options;
    this.#ctx = ctx;
    this.#open = open;
    this.#subscriber = subscriber;
    this.#component = `kafka source of bridge '${ctx.bridge}'`;
  }

  start(): void {
    const consumer = this.#open();
    this.#consumer = consumer;
    const run = async () => {
      await consumer.connect();
      await consumer.run({
        onBatch: (topic, partition, records, control) => this.#onBatch(topic, partition, records, control),
        onAssignment: (assignment) => this.#onAssignment(assignment),
        onCrash: (error, restarting) => {
          this.#ctx.counters.count('kafka.consumer.errors', { bridge: this.#ctx.bridge });
          this.#ctx.logger.error({ err: error, restarting }, `${this.#component}: consumer failed${restarting ? '; it reconnects' : ''}`);
          if (!restarting) this.#restart(consumer);
        },
      });
      this.#ctx.logger.info({ topics: this.#options.topics }, `${this.#component}: consuming`);
    };
    run().catch((error: unknown) => {
      this.#ctx.counters.count('kafka.consumer.errors', { bridge: this.#ctx.bridge });
      this.#ctx.logger.error({ err: error }, `${this.#component}: cannot consume ${this.#options.topics.join(',')}: ${describeError(error)}; retrying in ${RECONNECT_BACKOFF_MS} ms`);
      this.#restart(consumer);
    });
  }

  /** Unsubscribed: stop taking, let the messages in flight settle for a while, commit, disconnect. */
  stop(): void {
    if (this.#stopping) return;
    this.#stopping = true;
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    const consumer = this.#consumer;
    for (const p of this.#partitions.values()) if (!p.paused) this.#tryConsumer((c) => c.pause(p.topic, p.partition));
    const stopped = this.#settle()
      .then(() => this.#commit())
      .catch((error: unknown) => this.#ctx.logger.warn({ err: error }, `${this.#component}: last commit failed`))
      .then(async () => {
        const unacked = [...this.#partitions.values()].reduce((n, p) => n + p.window.size, 0);
        if (unacked > 0) this.#ctx.logger.warn({ unacked }, `${this.#component}: stopped with messages not acked; they are read again on the next start`);
        // Leaving the group hands its partitions over now rather than after sessionTimeoutMs.
        await consumer?.disconnect().catch((error: unknown) => this.#ctx.logger.warn({ err: error }, `${this.#component}: disconnect failed`));
      });
    this.#ctx.afterStop?.(stopped);
  }

  #restart(failed: KafkaConsumer): void {
    if (this.#stopping || this.#consumer !== failed) return;
    failed.disconnect().catch(() => {});
    this.#consumer = undefined;
    this.#later(RECONNECT_BACKOFF_MS, () => this.start());
  }

  async #onBatch(topic: string, partition: number, records: readonly KafkaInboundRecord[], control: KafkaBatchControl): Promise<void> {
    const state = this.#partition(topic, partition);
    for (const record of records) {
      if (this.#stopping || !control.active()) return;
      const offset = BigInt(record.offset);
      const next = state.window.next;
      if (next !== undefined && offset < next) {
        // Read again after a rebalance or restart of the consumer: it is in flight or acked already.
        control.resolve(record.offset);
        continue;
      }
      if (state.window.size >= this.#options.maxInFlight) {
        this.#tryConsumer((c) => c.pause(topic, partition));
        state.paused = true;
        this.#ctx.counters.count('kafka.partitions.paused', { bridge: this.#ctx.bridge });
        return;
      }
      state.window.take(offset);
      control.resolve(record.offset);
      if (state.retryRound) state.held.push({ offset, envelope: toEnvelope(topic, record) });
      else this.#deliver(state, offset, toEnvelope(topic, record), 1);
    }
    await control.heartbeat();
  }

  /**
   * Hands one message to the sinks. `alone` marks a delivery made by itself (nothing else of
   * its partition in flight), so that a refusal for good is its own and not its batch's;
   * `settled` hears how it ended.
   */
  #deliver(state: Partition, offset: bigint, envelope: Envelope, attempt: number, alone = false, settled?: (outcome: Settled) => void): void {
    // Acks of a partition this member lost, or of an earlier generation of it, are not ours to commit.
    const current = () => this.#partitions.get(key(state.topic, state.partition)) === state;
    this.#subscriber.next(
      createDelivery(envelope, {
        onAck: () => {
          if (!current()) return;
          this.#settled(state, offset);
          settled?.('done');
        },
        onNack: (error) => {
          if (!current()) return;
          const where = { id: envelope.id, topic: state.topic, partition: state.partition, offset: String(offset), err: error };
          if (isFerryError(error) && !error.retryable) {
            if (alone) {
              // No local dead-letter table for a bridge that skips the buffer: the log line is the record.
              this.#ctx.counters.count('kafka.messages.invalid', { bridge: this.#ctx.bridge, topic: state.topic });
              this.#ctx.logger.error(where, `${this.#component}: message refused for good; committing past it: ${error.message}`);
              this.#settled(state, offset);
              settled?.('done');
              return;
            }
            // Refused for good, maybe for another message of its batch: delivered again by itself
            // (with every other refused one, one at a time) to find out.
            this.#ctx.logger.warn(where, `${this.#component}: message refused for good with its batch; delivering it again by itself`);
            this.#refused(state, offset, { envelope, attempt, alone: true }, this.#options.retryBackoffMs);
            settled?.('retry');
            return;
          }
          const delayMs = backoffDelay({ initialMs: this.#options.retryBackoffMs, maxMs: MAX_RETRY_BACKOFF_MS }, attempt);
          this.#ctx.counters.count('kafka.messages.redelivered', { bridge: this.#ctx.bridge, topic: state.topic });
          this.#ctx.logger.warn({ ...where, attempt, delayMs }, `${this.#component}: message not taken; delivering it again`);
          this.#refused(state, offset, { envelope, attempt, alone }, delayMs);
          settled?.('retry');
        },
      }),
    );
  }

  /** Keeps a refused message for the partition's next retry round, which starts after `delayMs` unless one is due already. */
  #refused(state: Partition, offset: bigint, refused: Refused, delayMs: number): void {
    state.retry.set(offset, refused);
    if (!state.retryRound && !this.#stopping) {
      state.retryRound = true;
      this.#later(delayMs, () => this.#retry(state));
    }
  }

  /**
   * Pauses or resumes through the consumer, best effort: kafkajs refuses both while it restarts
   * after a crash, and an ack or a stop must not fail for that. True when it was taken.
   */
  #tryConsumer(action: (consumer: KafkaConsumer) => boolean | void): boolean {
    const consumer = this.#consumer;
    if (consumer === undefined) return true;
    try {
      return action(consumer) !== false;
    } catch {
      return false;
    }
  }

  #settled(state: Partition, offset: bigint): void {
    if (state.window.ack(offset)) this.#scheduleCommit();
    // A resume the consumer cannot take now (restarting after a crash) is tried again at the next settle.
    if (state.paused && state.window.size < this.#options.maxInFlight && !this.#stopping && this.#tryConsumer((c) => c.resume(state.topic, state.partition))) {
      state.paused = false;
    }
    this.#onProgress?.();
  }

  #onAssignment(assignment: Readonly<Record<string, readonly number[]>>): void {
    const owned = new Set(Object.entries(assignment).flatMap(([topic, partitions]) => partitions.map((p) => key(topic, p))));
    this.#ctx.logger.info({ assignment }, `${this.#component}: joined the group`);
    for (const [k, p] of this.#partitions) {
      // Kept: its window. A partition paused here is resumed on the next ack (harmless if a
      // new consumer never paused it); the new generation fetches from the committed offset
      // and #onBatch skips what the window took already.
      if (owned.has(k)) continue;
      this.#partitions.delete(k);
      if (p.window.size > 0) this.#ctx.logger.info({ topic: p.topic, partition: p.partition, unacked: p.window.size }, `${this.#component}: partition reassigned; its unacked messages are read again by its new owner`);
    }
    this.#onProgress?.();
  }

  /**
   * A partition's retry round: the refused messages again, in offset order (a batching sink
   * refuses the later messages of a failed batch too, so they are all here), then the messages
   * fetched meanwhile. Refusals during the round start the next one.
   */
  #retry(state: Partition): void {
    if (this.#stopping || this.#partitions.get(key(state.topic, state.partition)) !== state) return;
    const again = [...state.retry].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    state.retry.clear();
    if (!again.some(([, refused]) => refused.alone)) {
      state.retryRound = false;
      for (const [offset, { envelope, attempt }] of again) this.#deliver(state, offset, envelope, attempt + 1);
      this.#releaseHeld(state);
      return;
    }
    // A batch was refused for good: its messages go one at a time, each waiting for the one
    // before, so that the one at fault is refused alone and committed past, and the others are
    // written. A retryable refusal on the way puts the rest back for the next round.
    const next = (index: number): void => {
      const entry = again[index];
      if (entry === undefined) {
        state.retryRound = false;
        this.#releaseHeld(state);
        return;
      }
      const [offset, { envelope, attempt }] = entry;
      this.#deliver(state, offset, envelope, attempt + 1, true, (outcome) => {
        if (outcome === 'done') {
          next(index + 1);
          return;
        }
        for (const [o, refused] of again.slice(index + 1)) state.retry.set(o, { ...refused, alone: true });
        if (!this.#stopping) this.#later(this.#options.retryBackoffMs, () => this.#retry(state));
      });
    };
    next(0);
  }

  /** Hands over, in order, the messages fetched while the partition waited for a retry round. */
  #releaseHeld(state: Partition): void {
    const held = state.held;
    state.held = [];
    for (const { offset, envelope } of held) {
      if (state.retryRound) state.held.push({ offset, envelope });
      else this.#deliver(state, offset, envelope, 1);
    }
  }

  #partition(topic: string, partition: number): Partition {
    const k = key(topic, partition);
    let state = this.#partitions.get(k);
    if (state === undefined) {
      state = { topic, partition, window: new OffsetWindow(), committed: undefined, paused: false, retry: new Map(), held: [], retryRound: false };
      this.#partitions.set(k, state);
    }
    return state;
  }

  #scheduleCommit(): void {
    if (this.#commitScheduled || this.#stopping) return;
    this.#commitScheduled = true;
    setImmediate(() => {
      this.#commitScheduled = false;
      this.#commit().catch((error: unknown) => {
        this.#ctx.counters.count('kafka.commit.failed', { bridge: this.#ctx.bridge });
        this.#ctx.logger.warn({ err: error }, `${this.#component}: offset commit failed; retrying`);
        this.#later(COMMIT_RETRY_MS, () => this.#scheduleCommit());
      });
    });
  }

  /** Commits every partition's commit point that moved; one commit at a time. */
  async #commit(): Promise<void> {
    while (this.#committing !== undefined) await this.#committing.catch(() => {});
    const moved = [...this.#partitions.values()].flatMap((p) => {
      const point = p.window.commitPoint;
      return point !== undefined && (p.committed === undefined || point > p.committed) ? [{ state: p, point }] : [];
    });
    const consumer = this.#consumer;
    if (moved.length === 0 || consumer === undefined) return;
    this.#committing = consumer
      .commit(moved.map(({ state, point }) => ({ topic: state.topic, partition: state.partition, offset: String(point) })))
      .then(() => {
        for (const { state, point } of moved) if (state.committed === undefined || point > state.committed) state.committed = point;
      })
      .finally(() => {
        this.#committing = undefined;
      });
    await this.#committing;
  }

  /** Resolves when every window is settled or stopTimeoutMs passed. */
  #settle(): Promise<void> {
    const settled = () => [...this.#partitions.values()].every((p) => p.window.settled);
    if (settled()) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, this.#options.stopTimeoutMs);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.#onProgress = () => {
        if (!settled()) return;
        this.#onProgress = undefined;
        done();
      };
    });
  }

  #later(ms: number, run: () => void): void {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      run();
    }, ms);
    this.#timers.add(timer);
  }
}

function key(topic: string, partition: number): string {
  return `${partition}:${topic}`;
}

function toEnvelope(topic: string, record: KafkaInboundRecord): Envelope {
  return createEnvelope({
    topic,
    payload: record.value,
    headers: record.headers,
    timestamp: Number.isFinite(record.timestamp) ? record.timestamp : Date.now(),
    origin: { source: 'kafka' },
    ...(record.key === undefined ? {} : { key: record.key }),
  });
}
