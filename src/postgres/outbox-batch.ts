import type { Subscriber } from 'rxjs';
import type { ComponentContext } from '../core/component.ts';
import { createDelivery, type Delivery } from '../core/delivery.ts';
import type { Envelope } from '../core/envelope.ts';
import { isFerryError } from '../core/errors.ts';
import type { OutboxClient } from './outbox-rows.ts';

export interface OutboxBatchOptions {
  readonly component: string;
  readonly ctx: ComponentContext;
  readonly subscriber: Subscriber<Delivery>;
  readonly retryBackoffMs: number;
  /** Runs `run` after `ms`, unless the reading stopped first. */
  readonly later: (ms: number, run: () => void) => void;
  /** A row was refused for good while others were in flight: reading waits until it was tried again by itself. */
  readonly onRefusedWithOthers: () => void;
}

interface Row {
  readonly id: string;
  readonly envelope: Envelope;
}

/**
 * One read transaction's rows, locked until it commits, and how each was settled.
 *
 * A row a sink refuses for good (a FerryError that is not `retryable`: the `devices` sink
 * refusing a key that would not stay one topic level) may have been refused for another
 * message of a sink's batch. Once nothing else of the batch is in flight it is delivered again
 * by itself, `retryBackoffMs` later, one such row at a time. Refused for good again, it is the
 * row's fault: it is settled with the acked rows (deleted, or marked), counted as
 * `postgres.outbox.refused` and logged as an error, as the kafka source commits past such a
 * message. Left in the table, it would be read first again and again, and every row behind
 * it would wait for it.
 */
export class OutboxBatch {
  readonly client: OutboxClient;
  /** Gives the connection back (discards it, given an error). */
  readonly release: (error?: Error | boolean) => void;
  /** Rows read. */
  size = 0;
  /** Ids of the rows to delete or mark at the commit: acked, or refused for good by themselves. */
  readonly settled: string[] = [];
  /** Rows nacked retryably: they stay in the outbox, and reading backs off. */
  nacked = 0;
  /** Called once nothing is in flight and no row waits to be tried again: the batch can commit. */
  onSettled: () => void = () => {};
  readonly #o: OutboxBatchOptions;
  #inFlight = 0;
  readonly #again: Row[] = [];
  /** A row's retry by itself is scheduled. */
  #waiting = false;
  #stopped = false;
  #done = false;
  #heartbeat: NodeJS.Timeout | undefined;
  /** The heartbeat's statement in flight. */
  #beat: Promise<void> | undefined;
  /** Why the connection is known to be gone (a heartbeat failed): the batch cannot commit. */
  #broken: Error | undefined;

  constructor(client: OutboxClient, release: (error?: Error | boolean) => void, options: OutboxBatchOptions) {
    this.client = client;
    this.release = release;
    this.#o = options;
  }

  /** Rows not settled yet (they stay in the outbox if the batch commits now). */
  get unsettled(): number {
    return this.#inFlight + this.#again.length;
  }

  /** `onSettled` was called. */
  get done(): boolean {
    return this.#done;
  }

  /**
   * While its rows wait for their acks, a statement every `ms` keeps the transaction from
   * being idle for `idle_in_transaction_session_timeout` (set when it began, three times `ms`):
   * the server ends it only when these stop arriving, once the connection was cut off without
   * either end being told. It then unlocks the rows, which are read again, instead of keeping
   * them locked (skipped by every read) until its TCP notices, hours later. A heartbeat that
   * fails says the connection is gone, and the batch does not try to commit on it.
   */
  keepAlive(ms: number): void {
    this.#heartbeat = setInterval(() => {
      if (this.#beat !== undefined || this.#broken !== undefined) return;
      this.#beat = this.client.query('SELECT 1').then(
        () => {
          this.#beat = undefined;
        },
        (error: unknown) => {
          this.#beat = undefined;
          this.#broken = error instanceof Error ? error : new Error(String(error));
          clearInterval(this.#heartbeat);
        },
      );
    }, ms);
  }

  /** Stops the heartbeat before the batch commits (no statement of it may follow the commit); throws when one found the connection gone. */
  async quiet(): Promise<void> {
    clearInterval(this.#heartbeat);
    await this.#beat;
    if (this.#broken !== undefined) throw this.#broken;
  }

  /** Hands the read rows to the sinks, in order. */
  deliver(rows: readonly Row[]): void {
    this.size = rows.length;
    // Counted before the first goes out: a sink may settle it at once.
    this.#inFlight = rows.length;
    for (const row of rows) this.#deliver(row, false);
  }

  /** The reading stops: no row is tried again; one waiting for its retry stays in the outbox. */
  stop(): void {
    this.#stopped = true;
    if (this.#waiting) {
      this.#waiting = false;
      this.#next();
    }
  }

  #deliver(row: Row, alone: boolean): void {
    const { ctx, component } = this.#o;
    this.#o.subscriber.next(
      createDelivery(row.envelope, {
        onAck: () => {
          this.settled.push(row.id);
          this.#settle();
        },
        onNack: (error) => {
          const where = { id: row.id, messageId: row.envelope.id, err: error };
          if (isFerryError(error) && !error.retryable) {
            if (alone) {
              ctx.counters.count('postgres.outbox.refused', { bridge: ctx.bridge });
              ctx.logger.error(where, `${component}: row ${row.id} refused for good; it is settled without being delivered: ${error.message}`);
              this.settled.push(row.id);
            } else {
              ctx.logger.warn(where, `${component}: row ${row.id} refused for good with others in flight; delivering it again by itself`);
              this.#again.push(row);
              this.#o.onRefusedWithOthers();
            }
          } else {
            this.nacked += 1;
            ctx.logger.debug(where, `${component}: row ${row.id} refused; it is read again`);
          }
          this.#settle();
        },
      }),
    );
  }

  #settle(): void {
    this.#inFlight -= 1;
    this.#next();
  }

  #next(): void {
    if (this.#inFlight > 0 || this.#waiting) return;
    if (this.#again.length === 0 || this.#stopped) {
      if (!this.#done) {
        this.#done = true;
        this.onSettled();
      }
      return;
    }
    this.#waiting = true;
    this.#o.later(this.#o.retryBackoffMs, () => {
      const row = this.#again[0];
      if (!this.#waiting || row === undefined) return;
      this.#waiting = false;
      this.#again.shift();
      this.#inFlight += 1;
      this.#deliver(row, true);
    });
  }
}
