import type { Delivery } from '../core/delivery.ts';

/**
 * Ferry's bookkeeping for one input message of a handler. It holds the buffer's delivery,
 * never the `Message` object the handler sees: the tracker learns that the handler let go
 * of a message when that object is garbage collected.
 */
export interface Ticket {
  readonly delivery: Delivery;
  /** Outputs built from the message that the sinks have not confirmed yet. */
  pending: number;
  /** The handler no longer holds the message (it was collected, or the pipeline ended). */
  released: boolean;
  settled: boolean;
}

export interface TrackerEvents {
  /** A ticket was acked or nacked. */
  onSettle(ticket: Ticket, outcome: 'acked' | 'nacked'): void;
  /** The garbage collector reported messages the handler let go of. */
  onRelease(count: number): void;
}

/**
 * The ack rule of handler bridges: an input is acked once (1) every output built from it was
 * confirmed by its sink and (2) the handler no longer holds it — it was filtered out, or the
 * window holding it was emitted and dropped. (2) is reachability: each `Message` object is
 * registered with a FinalizationRegistry whose held value is its ticket, and nothing here
 * keeps a strong reference to the message itself.
 *
 * Any output that fails nacks the inputs it came from; an input is settled once, so what
 * happens to it afterwards (another output confirmed, the object collected) is ignored.
 */
export class InputTracker {
  readonly #open = new Set<Ticket>();
  readonly #events: TrackerEvents;
  readonly #registry: FinalizationRegistry<Ticket>;
  #releasedInTurn = 0;
  /** Set by close: nothing is settled any more. */
  #closed = false;

  constructor(events: TrackerEvents) {
    this.#events = events;
    this.#registry = new FinalizationRegistry((ticket) => {
      if (this.#closed) return;
      // Callbacks come in bursts after a collection: report each burst once.
      if (this.#releasedInTurn === 0) queueMicrotask(() => this.#reportReleases());
      this.#releasedInTurn += 1;
      ticket.released = true;
      this.#check(ticket);
    });
  }

  /** Inputs not settled yet. */
  get open(): number {
    return this.#open.size;
  }

  /** Inputs the handler may still hold (not collected yet). */
  get held(): number {
    let n = 0;
    for (const ticket of this.#open) if (!ticket.released) n += 1;
    return n;
  }

  /** Starts tracking `delivery`; `message` is the object the handler gets for it. */
  track(delivery: Delivery, message: object): Ticket {
    const ticket: Ticket = { delivery, pending: 0, released: false, settled: false };
    this.#open.add(ticket);
    this.#registry.register(message, ticket);
    return ticket;
  }

  /** An output built from these inputs went to its sink. */
  hold(tickets: readonly Ticket[]): void {
    for (const ticket of tickets) ticket.pending += 1;
  }

  /** The sink confirmed an output built from these inputs. */
  confirm(tickets: readonly Ticket[]): void {
    for (const ticket of tickets) {
      ticket.pending -= 1;
      this.#check(ticket);
    }
  }

  /** An output built from these inputs failed: they are nacked with its error (retried or dead-lettered). */
  fail(tickets: readonly Ticket[], error: Error): void {
    for (const ticket of tickets) this.#nack(ticket, error);
  }

  /** Nacks one input (the handler rejected it, or its payload broke the handler). */
  reject(ticket: Ticket, error: Error): void {
    this.#nack(ticket, error);
  }

  /** The pipeline completed: it holds nothing any more, so each input waits only for its outputs. */
  releaseAll(): void {
    for (const ticket of [...this.#open]) {
      ticket.released = true;
      this.#check(ticket);
    }
  }

  /** The pipeline failed: every input not settled yet is nacked, to be delivered again. */
  failAll(error: Error): void {
    for (const ticket of [...this.#open]) this.#nack(ticket, error);
  }

  /**
   * The bridge was torn down (abort): inputs not settled yet are left as they are, neither
   * acked nor nacked, whatever happens to them later. Their rows stay in the buffer for the
   * bridge that reads the cursor next.
   */
  close(): void {
    this.#closed = true;
    for (const ticket of this.#open) ticket.settled = true;
    this.#open.clear();
  }

  #check(ticket: Ticket): void {
    if (this.#closed || ticket.settled || !ticket.released || ticket.pending > 0) return;
    ticket.settled = true;
    this.#open.delete(ticket);
    ticket.delivery.ack();
    this.#events.onSettle(ticket, 'acked');
  }

  #nack(ticket: Ticket, error: Error): void {
    if (this.#closed || ticket.settled) return;
    ticket.settled = true;
    this.#open.delete(ticket);
    ticket.delivery.nack(error);
    this.#events.onSettle(ticket, 'nacked');
  }

  #reportReleases(): void {
    const count = this.#releasedInTurn;
    this.#releasedInTurn = 0;
    this.#events.onRelease(count);
  }
}
