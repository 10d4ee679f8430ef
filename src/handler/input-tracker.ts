import type { Delivery } from '../core/delivery.ts';
import { InFlight } from '../core/in-flight.ts';
import { steadyNow } from '../core/steady-clock.ts';

/**
 * Ferry's bookkeeping for one input message of a handler. It holds the buffer's delivery,
 * never the `Message` object the handler sees: that object may be collected once the
 * handler lets go of it, which is the last-resort way of learning it is done with it.
 */
export interface Ticket {
  readonly delivery: Delivery;
  /** Outputs built from the message that the sinks have not confirmed yet. */
  pending: number;
  /** An output built from the message was confirmed. */
  confirmed: boolean;
  /** The handler keeps the message for later outputs: a confirmed output does not settle it, only `done`. */
  kept: boolean;
  /** The handler is done with the message: it said so, its object was collected, or the pipeline ended. */
  released: boolean;
  settled: boolean;
  /** When the message was handed to the handler (steadyNow()). */
  readonly since: number;
  /**
   * The Message object the message was last handed as, a number unique in the tracker:
   * collections of earlier ones, and what they are told (`done`, `keep`, `reject`), are
   * ignored. NOT_HANDED once the run it was handed to ended, until it is handed again.
   */
  generation: number;
  /**
   * Outputs built from the message alone in the current and earlier runs of the pipeline: to
   * `routedTo`, `routed` of them, and to any other sink in `routedElsewhere` (see `noteRouted`).
   */
  routedTo: string | undefined;
  routed: number;
  routedElsewhere: Map<string, number> | undefined;
  /**
   * Per sink, how many outputs a restarted pipeline builds from the message again without
   * their being sent again: they were sent by an earlier run (issue 18).
   */
  skip: Map<string, number> | undefined;
  /** Set once the held-too-long warning was given for it. */
  warned: boolean;
  /** The generation whose Message object the garbage collector watches (-1: none yet). */
  watched: number;
}

/** The generation of a ticket whose run ended (failed): it waits to be handed to the next one. */
export const NOT_HANDED = -1;

/** An output built from the ticket's message alone went to `sink`: most go to one sink, counted without a Map. */
export function noteRouted(ticket: Ticket, sink: string): void {
  if (ticket.routedTo === undefined) ticket.routedTo = sink;
  if (ticket.routedTo === sink) ticket.routed += 1;
  else (ticket.routedElsewhere ??= new Map()).set(sink, (ticket.routedElsewhere.get(sink) ?? 0) + 1);
}

export interface TrackerEvents {
  /** A ticket was acked or nacked. */
  onSettle(ticket: Ticket, outcome: 'acked' | 'nacked'): void;
  /** The garbage collector reported messages the handler let go of. */
  onRelease(count: number): void;
}

/**
 * The ack rule of handler bridges (issue 18): an input is acked once every output built from
 * it was confirmed by its sink and either
 * - at least one output built from it was confirmed (an output carries what the handler made
 *   of the message: a map, an enrichment, a window's aggregate) and the handler did not say it
 *   keeps the message for later outputs (`message.keep()`), or
 * - the handler is done with it: it called `message.done()` (or dropped it with a Ferry-aware
 *   filter), the pipeline ended, or, as a last resort, the `Message` object became
 *   unreachable (a FinalizationRegistry whose held value names the ticket; nothing here keeps
 *   a strong reference to the message itself). Only a message that nothing else can settle is
 *   watched so (see `watch`): a registered object outlives young collections, which made a
 *   registration per message the largest cost of a handler that maps every message to a sink.
 *
 * Any output that fails nacks the inputs it came from; an input is settled once, so what
 * happens to it afterwards (another output confirmed, the object collected) is ignored.
 */
export class InputTracker {
  /** Open tickets in the order they were handed: the first is the oldest. */
  readonly #open = new InFlight<Ticket>((ticket) => ticket.settled);
  readonly #events: TrackerEvents;
  readonly #registry: FinalizationRegistry<{ readonly ticket: Ticket; readonly generation: number }>;
  #releasedInTurn = 0;
  /** The last generation given to a ticket (see Ticket.generation). */
  #generations = 0;
  /** Set by close: nothing is settled any more. */
  #closed = false;

  constructor(events: TrackerEvents) {
    this.#events = events;
    this.#registry = new FinalizationRegistry(({ ticket, generation }) => {
      if (this.#closed || ticket.generation !== generation) return;
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

  /** Inputs the handler may still hold (not done with, not collected). */
  get held(): number {
    let n = 0;
    for (const ticket of this.#open) if (!ticket.released) n += 1;
    return n;
  }

  /** Inputs whose ack waits only for the garbage collector to find them released. */
  get awaitingRelease(): number {
    let n = 0;
    for (const ticket of this.#open) if (heldByHandler(ticket) && !ticket.released && (!ticket.confirmed || ticket.kept)) n += 1;
    return n;
  }

  /** The open tickets, oldest first. */
  tickets(): IterableIterator<Ticket> {
    return this.#open[Symbol.iterator]();
  }

  /** The oldest open ticket, if any. */
  oldest(): Ticket | undefined {
    return this.#open.first();
  }

  /** Starts tracking `delivery`; `watch` then names the object the handler got for it. */
  track(delivery: Delivery): Ticket {
    const ticket: Ticket = {
      delivery,
      pending: 0,
      confirmed: false,
      kept: false,
      released: false,
      settled: false,
      since: steadyNow(),
      generation: ++this.#generations,
      routedTo: undefined,
      routed: 0,
      routedElsewhere: undefined,
      skip: undefined,
      warned: false,
      watched: -1,
    };
    this.#open.add(ticket);
    return ticket;
  }

  /**
   * Once `message` (the ticket's current object) was handed and the pipeline's synchronous part
   * ran: unless an output built from it is on its way (whose confirmation or failure settles it)
   * and the handler did not keep it, its collection is what settles it, so the garbage collector
   * is asked to report it. A ticket with an output pending is settled by the output, or watched
   * from the moment the handler keeps it (`keep`); one the handler is done with (`done`, a
   * Ferry-aware filter) settles at the end of the turn.
   */
  watch(ticket: Ticket, message: object): void {
    if (ticket.settled || ticket.released || ticket.watched === ticket.generation || (ticket.pending > 0 && !ticket.kept)) return;
    ticket.watched = ticket.generation;
    this.#registry.register(message, { ticket, generation: ticket.generation });
  }

  /**
   * Hands an open ticket's message again as a new object (a restarted pipeline): the outputs
   * the earlier runs built from it alone are not sent again when the new run builds them.
   */
  retrack(ticket: Ticket): Ticket {
    ticket.generation = ++this.#generations;
    ticket.released = false;
    ticket.skip = ticket.routedTo === undefined ? undefined : new Map([[ticket.routedTo, ticket.routed], ...(ticket.routedElsewhere ?? [])]);
    return ticket;
  }

  /** An output built from these inputs went to its sink. */
  hold(tickets: readonly Ticket[]): void {
    for (const ticket of tickets) this.holdOne(ticket);
  }

  /** An output built from this input alone went to its sink. */
  holdOne(ticket: Ticket): void {
    ticket.pending += 1;
  }

  /** The sink confirmed an output built from these inputs. */
  confirm(tickets: readonly Ticket[]): void {
    for (const ticket of tickets) this.confirmOne(ticket);
  }

  /** The sink confirmed an output built from this input (alone or with others). */
  confirmOne(ticket: Ticket): void {
    ticket.pending -= 1;
    ticket.confirmed = true;
    this.#check(ticket);
  }

  /** The handler is done with this input: acked once its outputs are confirmed (at the end of the turn when there are none). */
  done(ticket: Ticket): void {
    ticket.released = true;
    // At the end of the turn: an output built from it in the same step (`done()` then
    // `return tools.to(...)`) reaches its sink first and is waited for.
    queueMicrotask(() => this.#check(ticket));
  }

  /** The handler keeps this input (`message`, its object) for later outputs: only `done` (or collection) settles it. */
  keep(ticket: Ticket, message: object): void {
    ticket.kept = true;
    this.watch(ticket, message);
  }

  /** Acks an input now, whatever its outputs (held past maxHoldMs under `ack`). */
  ack(ticket: Ticket): void {
    if (this.#closed || ticket.settled) return;
    ticket.pending = 0;
    ticket.released = true;
    this.#check(ticket);
  }

  /** An output built from these inputs failed: they are nacked with its error (retried or dead-lettered). */
  fail(tickets: readonly Ticket[], error: Error): void {
    for (const ticket of tickets) this.#nack(ticket, error);
  }

  /** Nacks one input (the handler rejected it, or it broke the handler). */
  reject(ticket: Ticket, error: Error): void {
    this.#nack(ticket, error);
  }

  /**
   * The pipeline completed: it holds nothing any more, so each input handed to it waits only for
   * its outputs. One not handed to it (left by a failed run, and not handed again before the
   * stop) stays open: the next reader of the cursor gets it.
   */
  releaseAll(): void {
    for (const ticket of [...this.#open]) {
      if (ticket.generation === NOT_HANDED) continue;
      ticket.released = true;
      this.#check(ticket);
    }
  }

  /**
   * The run the open inputs were handed to failed: its Message objects are dead. Their
   * collection, and what the dead run still tells them, must not settle an input that the next
   * run gets again (they would be acked unhandled); outputs the dead run sent still count.
   */
  endRun(): void {
    for (const ticket of this.#open) ticket.generation = NOT_HANDED;
  }

  /** Every input not settled yet is nacked, to be delivered again. */
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
    if (this.#closed || ticket.settled || ticket.pending > 0 || !(ticket.released || (ticket.confirmed && !ticket.kept))) return;
    ticket.settled = true;
    this.#open.settled();
    ticket.delivery.ack();
    this.#events.onSettle(ticket, 'acked');
  }

  #nack(ticket: Ticket, error: Error): void {
    if (this.#closed || ticket.settled) return;
    ticket.settled = true;
    this.#open.settled();
    ticket.delivery.nack(error);
    this.#events.onSettle(ticket, 'nacked');
  }

  #reportReleases(): void {
    const count = this.#releasedInTurn;
    this.#releasedInTurn = 0;
    this.#events.onRelease(count);
  }
}

/**
 * Whether the ticket's input is held by the running handler itself: handed to the running
 * pipeline and waiting on no output (one waiting on a sink is the sink's; one a failed run
 * left waits for the next run).
 */
export function heldByHandler(ticket: Ticket): boolean {
  return ticket.generation !== NOT_HANDED && ticket.pending === 0;
}
