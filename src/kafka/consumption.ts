import { Observable, type Subscriber } from 'rxjs';
import type { ComponentContext } from '../core/component.ts';
import type { Delivery } from '../core/delivery.ts';
import { createEnvelope, type Envelope } from '../core/envelope.ts';
import { describeError } from '../core/errors.ts';
import type { Source } from '../core/stream.ts';
import { AssignedPartition, type PartitionOwner } from './assigned-partition.ts';
import type { KafkaBatchControl, KafkaConsumer, KafkaInboundRecord } from './client.ts';
import { recordId } from './record-id.ts';
import { refusalType } from './topic-refusals.ts';

export interface ConsumptionOptions {
  readonly topics: readonly string[];
  readonly maxInFlight: number;
  readonly retryBackoffMs: number;
  readonly stopTimeoutMs: number;
}

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

/**
 * One subscription's consumer: connecting and reconnecting, pausing a partition whose window
 * is full, committing and stopping. Each assigned partition's deliveries and retry rounds
 * are its AssignedPartition's.
 */
class Consumption {
  readonly #options: ConsumptionOptions;
  readonly #ctx: ComponentContext;
  readonly #open: () => KafkaConsumer;
  readonly #component: string;
  readonly #partitions = new Map<string, AssignedPartition>();
  readonly #timers = new Set<NodeJS.Timeout>();
  #consumer: KafkaConsumer | undefined;
  #stopping = false;
  #committing: Promise<void> | undefined;
  #commitScheduled = false;
  /** Set while a topic to read does not exist (yet): said once, until consumption starts. */
  #waitingForTopic = false;
  /** Called whenever a window moved, while stop() waits for the windows to settle. */
  #onProgress: (() => void) | undefined;
  readonly #owner: PartitionOwner;

  constructor(options: ConsumptionOptions, ctx: ComponentContext, open: () => KafkaConsumer, subscriber: Subscriber<Delivery>) {
    this.#options = options;
    this.#ctx = ctx;
    this.#open = open;
    this.#component = `kafka source of bridge '${ctx.bridge}'`;
    this.#owner = {
      subscriber,
      ctx,
      component: this.#component,
      retryBackoffMs: options.retryBackoffMs,
      stopping: () => this.#stopping,
      owns: (partition) => this.#partitions.get(key(partition.topic, partition.partition)) === partition,
      settled: (partition, offset) => this.#settled(partition, offset),
      later: (ms, run) => this.#later(ms, run),
    };
  }

  start(): void {
    const consumer = this.#open();
    this.#consumer = consumer;
    const run = async () => {
      await consumer.connect();
      // Unsubscribed while connecting: stop() disconnected already; joining the group now would
      // hold its partitions with nobody to ack, and keep the process alive.
      if (this.#stopping || this.#consumer !== consumer) {
        await consumer.disconnect().catch(() => {});
        return;
      }
      await consumer.run({
        onBatch: (topic, partition, records, control) => this.#onBatch(topic, partition, records, control),
        onAssignment: (assignment) => this.#onAssignment(assignment),
        onCrash: (error, restarting) => {
          this.#ctx.counters.count('kafka.consumer.errors', { bridge: this.#ctx.bridge });
          this.#ctx.logger.error({ err: error, restarting }, `${this.#component}: consumer failed${restarting ? '; it reconnects' : ''}`);
          if (!restarting) this.#restart(consumer);
        },
      });
      const waited = this.#waitingForTopic;
      this.#waitingForTopic = false;
      this.#ctx.logger.info({ topics: this.#options.topics }, `${this.#component}: consuming${waited ? ' (the topic exists now)' : ''}`);
    };
    run().catch((error: unknown) => {
      this.#ctx.counters.count('kafka.consumer.errors', { bridge: this.#ctx.bridge });
      if (refusalType(error) === 'UNKNOWN_TOPIC_OR_PARTITION') this.#topicMissing(error);
      else
        this.#ctx.logger.error(
          { err: error },
          `${this.#component}: cannot consume ${this.#options.topics.join(',')}: ${describeError(error)}; retrying in ${RECONNECT_BACKOFF_MS} ms`,
        );
      this.#restart(consumer);
    });
  }

  /**
   * A topic to read does not exist: normal on a first start, before a producer or the cluster's
   * auto-creation made it. A warning, once until consumption starts; each retry at debug.
   */
  #topicMissing(error: unknown): void {
    const topics = this.#options.topics;
    if (this.#waitingForTopic) {
      this.#ctx.logger.debug({ err: error, topics }, `${this.#component}: still waiting for its topic`);
      return;
    }
    this.#waitingForTopic = true;
    // kafkajs names no topic in the error: of several, any one may be the missing one.
    const which = topics.length === 1 ? `topic ${topics[0]}` : `one of the topics ${topics.join(', ')}`;
    this.#ctx.logger.warn(
      { err: error, topics },
      `${this.#component}: ${which} does not exist (yet): waiting for it; retried every ${RECONNECT_BACKOFF_MS / 1000} s (Kafka creates it on first use when auto.create.topics.enable is on; otherwise create it)`,
    );
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
      state.take(offset, toEnvelope(topic, partition, record));
    }
    await control.heartbeat();
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

  #settled(state: AssignedPartition, offset: bigint): void {
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
      // kafkajs keeps a partition's pause across rebalances: paused when it was taken away, it
      // would never be fetched again if it came back, and nothing here would resume it (no
      // window, so no ack).
      if (p.paused) this.#tryConsumer((c) => c.resume(p.topic, p.partition));
      if (p.window.size > 0)
        this.#ctx.logger.info(
          { topic: p.topic, partition: p.partition, unacked: p.window.size },
          `${this.#component}: partition reassigned; its unacked messages are read again by its new owner`,
        );
    }
    // A partition assigned without a window here is not paused by this member: one a consumer
    // before a restart paused, or whose resume above kafkajs could not take, is read again.
    for (const [topic, partitions] of Object.entries(assignment)) {
      for (const partition of partitions) if (this.#partitions.get(key(topic, partition))?.paused !== true) this.#tryConsumer((c) => c.resume(topic, partition));
    }
    this.#onProgress?.();
  }

  #partition(topic: string, partition: number): AssignedPartition {
    const k = key(topic, partition);
    let state = this.#partitions.get(k);
    if (state === undefined) {
      state = new AssignedPartition(topic, partition, this.#owner);
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

function toEnvelope(topic: string, partition: number, record: KafkaInboundRecord): Envelope {
  const timestamp = Number.isFinite(record.timestamp) ? record.timestamp : Date.now();
  return createEnvelope({
    // Read again (a restart, a rebalance), the record is the same message: the same id.
    id: recordId(topic, partition, record.offset, record.timestamp),
    topic,
    payload: record.value,
    headers: record.headers,
    timestamp,
    origin: { source: 'kafka' },
    ...(record.key === undefined ? {} : { key: record.key }),
  });
}
