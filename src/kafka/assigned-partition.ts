import type { Subscriber } from 'rxjs';
import { backoffDelay } from '../core/backoff.ts';
import type { ComponentContext } from '../core/component.ts';
import { createDelivery, type Delivery } from '../core/delivery.ts';
import type { Envelope } from '../core/envelope.ts';
import { isFerryError } from '../core/errors.ts';
import { OffsetWindow } from './offset-window.ts';

const MAX_RETRY_BACKOFF_MS = 60_000;

/**
 * How many messages were refused for good with each error. A batching sink nacks every message
 * of a batch it could not write with one error (batching-sink.ts `failBatch`), while a sink
 * refusing messages one by one (devices, a message of a batch refused alone) gives each its own:
 * a count above 1 is a batch refused together, whose culprit is still to be found. Kept by
 * error, across partitions, as a batch may hold messages of several.
 */
const refusedWith = new WeakMap<Error, number>();

/** What a partition needs from the consumption that owns it (consumption.ts). */
export interface PartitionOwner {
  readonly subscriber: Subscriber<Delivery>;
  readonly ctx: ComponentContext;
  /** The component as log lines name it. */
  readonly component: string;
  /** The first retry delay, doubled per attempt up to 60 s. */
  readonly retryBackoffMs: number;
  /** True once the consumption stops: no retry round starts from then on. */
  stopping(): boolean;
  /**
   * False for a partition this member lost, or an earlier generation of it: its acks are
   * not ours to commit.
   */
  owns(partition: AssignedPartition): boolean;
  /** A message is done with (acked, or refused for good and passed): its offset may be committed. */
  settled(partition: AssignedPartition, offset: bigint): void;
  /** Runs `run` after `ms`, unless the consumption stops first. */
  later(ms: number, run: () => void): void;
}

/** A message a sink refused; `alone` once it must be delivered by itself (it was refused for good with others). */
interface Refused {
  readonly envelope: Envelope;
  readonly attempt: number;
  readonly alone: boolean;
  /** The error it was refused for good with, not yet logged: logged when it is delivered again by itself. */
  readonly error?: Error | undefined;
}

type Settled = 'done' | 'retry';

/**
 * One partition assigned to this member, and its messages on their way to the sinks: the
 * window of offsets taken and not yet committable, and the retry rounds of the messages a
 * sink refused.
 */
export class AssignedPartition {
  readonly topic: string;
  readonly partition: number;
  readonly window = new OffsetWindow();
  /** The offset last committed by this member, if any. */
  committed: bigint | undefined = undefined;
  paused = false;
  readonly #owner: PartitionOwner;
  /**
   * Messages a sink refused for now, waiting for the partition's next retry round; while any
   * wait, newly fetched messages are held back (`#held`), so that the partition's order holds
   * through retries: the round hands over the refused ones in offset order, then the held ones.
   */
  readonly #retry = new Map<bigint, Refused>();
  #held: { readonly offset: bigint; readonly envelope: Envelope }[] = [];
  #retryRound = false;

  constructor(topic: string, partition: number, owner: PartitionOwner) {
    this.topic = topic;
    this.partition = partition;
    this.#owner = owner;
  }

  /** A message fetched and taken into the window: to the sinks now, or after the retry round that is due. */
  take(offset: bigint, envelope: Envelope): void {
    if (this.#retryRound) this.#held.push({ offset, envelope });
    else this.#deliver(offset, envelope, 1);
  }

  /**
   * Hands one message to the sinks. `alone` marks a delivery made by itself (nothing else of
   * its partition in flight), so that a refusal for good is its own and not its batch's;
   * `settled` hears how it ended.
   */
  #deliver(offset: bigint, envelope: Envelope, attempt: number, alone = false, settled?: (outcome: Settled) => void): void {
    const owner = this.#owner;
    const { ctx, component } = owner;
    owner.subscriber.next(
      createDelivery(envelope, {
        onAck: () => {
          if (!owner.owns(this)) return;
          owner.settled(this, offset);
          settled?.('done');
        },
        onNack: (error) => {
          if (!owner.owns(this)) return;
          const where = { id: envelope.id, topic: this.topic, partition: this.partition, offset: String(offset), err: error };
          if (isFerryError(error) && !error.retryable) {
            if (alone) {
              // No local dead-letter table for a bridge that skips the buffer: the log line is the record.
              ctx.counters.count('kafka.messages.invalid', { bridge: ctx.bridge, topic: this.topic });
              ctx.logger.error(where, `${component}: message refused for good; committing past it: ${error.message}`);
              owner.settled(this, offset);
              settled?.('done');
              return;
            }
            // Refused for good, maybe for another message of its batch: delivered again by itself
            // (with every other refused one, one at a time) to find out. Logged at the retry
            // round, once the rest of its batch (nacked with the same error) has been refused too.
            refusedWith.set(error, (refusedWith.get(error) ?? 0) + 1);
            this.#refused(offset, { envelope, attempt, alone: true, error }, owner.retryBackoffMs);
            settled?.('retry');
            return;
          }
          const delayMs = backoffDelay({ initialMs: owner.retryBackoffMs, maxMs: MAX_RETRY_BACKOFF_MS }, attempt);
          ctx.counters.count('kafka.messages.redelivered', { bridge: ctx.bridge, topic: this.topic });
          ctx.logger.warn({ ...where, attempt, delayMs }, `${component}: message not taken; delivering it again`);
          this.#refused(offset, { envelope, attempt, alone }, delayMs);
          settled?.('retry');
        },
      }),
    );
  }

  /** Keeps a refused message for the partition's next retry round, which starts after `delayMs` unless one is due already. */
  #refused(offset: bigint, refused: Refused, delayMs: number): void {
    this.#retry.set(offset, refused);
    if (!this.#retryRound && !this.#owner.stopping()) {
      this.#retryRound = true;
      this.#owner.later(delayMs, () => this.#runRetryRound());
    }
  }

  /**
   * A partition's retry round: the refused messages again, in offset order (a batching sink
   * refuses the later messages of a failed batch too, so they are all here), then the messages
   * fetched meanwhile. Refusals during the round start the next one.
   */
  #runRetryRound(): void {
    if (this.#owner.stopping() || !this.#owner.owns(this)) return;
    const again = [...this.#retry].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    this.#retry.clear();
    if (!again.some(([, refused]) => refused.alone)) {
      this.#retryRound = false;
      for (const [offset, { envelope, attempt }] of again) this.#deliver(offset, envelope, attempt + 1);
      this.#releaseHeld();
      return;
    }
    // A batch was refused for good (the buffer reader's `isolate` does the same for buffered
    // bridges): its messages go one at a time, each waiting for the one
    // before, so that the one at fault is refused alone and committed past, and the others are
    // written. A retryable refusal on the way puts the rest back for the next round.
    for (const [offset, refused] of again) this.#logRefusedForGood(offset, refused);
    const next = (index: number): void => {
      const entry = again[index];
      if (entry === undefined) {
        this.#retryRound = false;
        this.#releaseHeld();
        return;
      }
      const [offset, { envelope, attempt }] = entry;
      this.#deliver(offset, envelope, attempt + 1, true, (outcome) => {
        if (outcome === 'done') {
          next(index + 1);
          return;
        }
        for (const [o, { envelope: e, attempt: a }] of again.slice(index + 1)) this.#retry.set(o, { envelope: e, attempt: a, alone: true });
        if (!this.#owner.stopping()) this.#owner.later(this.#owner.retryBackoffMs, () => this.#runRetryRound());
      });
    };
    next(0);
  }

  /**
   * Logs a message refused for good that is now delivered again by itself: a warning when its
   * batch was refused with it (the error it was nacked with came with other messages too), only
   * a debug line when it was refused alone (a sink that does not batch), whose own verdict the
   * error line of its second refusal gives.
   */
  #logRefusedForGood(offset: bigint, { envelope, error }: Refused): void {
    if (error === undefined) return;
    const { ctx, component } = this.#owner;
    const where = { id: envelope.id, topic: this.topic, partition: this.partition, offset: String(offset), err: error };
    const batch = refusedWith.get(error) ?? 1;
    if (batch > 1) ctx.logger.warn({ ...where, batch }, `${component}: message refused for good with its batch of ${batch}; delivering it again by itself`);
    else ctx.logger.debug(where, `${component}: message refused for good; delivering it again by itself to tell its own refusal from its batch's`);
  }

  /** Hands over, in order, the messages fetched while the partition waited for a retry round. */
  #releaseHeld(): void {
    const held = this.#held;
    this.#held = [];
    for (const { offset, envelope } of held) {
      if (this.#retryRound) this.#held.push({ offset, envelope });
      else this.#deliver(offset, envelope, 1);
    }
  }
}
