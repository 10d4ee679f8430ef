import type { Subject } from 'rxjs';
import type { Logger } from 'pino';
import type { Counters } from '../core/component.ts';
import { createInternalDelivery, type Delivery, type SharedDeliveryHandlers } from '../core/delivery.ts';
import { type Envelope, type Origin, createEnvelope } from '../core/envelope.ts';
import { FerryError, describeError } from '../core/errors.ts';
import { failedSpanFields } from '../core/tracing.ts';
import type { Message, Output } from '../handler/define.ts';
import { type InputTracker, type Ticket, noteRouted } from '../handler/input-tracker.ts';
import { isOutput, ticketOf } from '../handler/message.ts';

/** Origins kept for reuse, one per device; all dropped when there are more. */
const MAX_ORIGINS_KEPT = 10_000;

/**
 * An output on its way to its sink: the inputs it settles. An output built from one message,
 * the most common, has that message's ticket alone: no array and no object of its own, which
 * would live until the sink confirms it.
 */
type Routed = Ticket | RoutedMany;
interface RoutedMany {
  readonly tickets: readonly Ticket[];
  readonly sink: string;
  /** Built from no message: nothing delivers it again if it fails. */
  readonly fromNothing: boolean;
}
const isMany = (routed: Routed): routed is RoutedMany => 'tickets' in routed;

/**
 * Routes a TypeScript bridge's outputs to its sinks: each output becomes a delivery for the
 * sink it names, and its confirmation or failure settles the inputs it was built from (see
 * InputTracker). An output a restarted pipeline builds again for an input whose earlier run
 * sent it already is not sent twice.
 */
export class OutputRouter {
  readonly #bridge: string;
  readonly #sinks: ReadonlyMap<string, Subject<Delivery>>;
  readonly #tracker: InputTracker;
  readonly #logger: Logger;
  readonly #counters: Counters;
  /** The origin's source of every output: `handler:<bridge>`. */
  readonly #source: string;
  readonly #origins = new Map<string | undefined, Origin>();
  /** Set once an output was built from an input that had settled: warned once per bridge. */
  #toldLate = false;

  /** What an output's confirmation or failure does, shared by all of them (each delivery's context is its output's). */
  readonly #settlement: SharedDeliveryHandlers<Routed> = {
    onAck: (routed) => (isMany(routed) ? this.#tracker.confirm(routed.tickets) : this.#tracker.confirmOne(routed)),
    onNack: (routed, error) => {
      if (!isMany(routed)) {
        this.#tracker.reject(routed, error);
        return;
      }
      const { tickets, sink, fromNothing } = routed;
      if (fromNothing) {
        this.#counters.count('handler.outputs.lost', { bridge: this.#bridge, sink });
        this.#logger.warn({ err: error, sink, ...failedSpanFields(error) }, 'an output built from no message failed; it has no input to deliver again');
      }
      this.#tracker.fail(tickets, error);
    },
  };

  constructor(bridge: string, sinks: ReadonlyMap<string, Subject<Delivery>>, tracker: InputTracker, logger: Logger, counters: Counters) {
    this.#bridge = bridge;
    this.#sinks = sinks;
    this.#tracker = tracker;
    this.#logger = logger;
    this.#counters = counters;
    this.#source = `handler:${bridge}`;
  }

  /**
   * Sends one emitted value on; returns the error for a value that is no output of this bridge
   * (CONFIG_INVALID: the bridge's code is at fault, as for an output built wrongly).
   */
  route(output: unknown): FerryError | undefined {
    const branded = isOutput(output);
    const sink = branded ? this.#sinks.get(output.sink) : undefined;
    if (!branded || sink === undefined) {
      const what = branded ? `an output for '${output.sink}', which is not a sink of this bridge` : describeValue(output);
      return new FerryError('CONFIG_INVALID', `bridge '${this.#bridge}': the handler emitted ${what}; emit outputs built with tools.to(sink, from, ...)`);
    }
    const { sink: name, from } = output;
    const only = from.length === 1 ? ticketOf(from[0] as Message) : undefined;
    if (only !== undefined && !only.settled) {
      this.#routeOne(sink, name, only, output);
      return undefined;
    }
    const tickets: Ticket[] = [];
    let late = 0;
    for (const message of from) {
      const ticket = ticketOf(message);
      if (ticket === undefined) continue;
      if (ticket.settled) late += 1;
      else tickets.push(ticket);
    }
    if (late > 0) this.#lateOutput(name, late);
    this.#tracker.hold(tickets);
    // The delivery keeps the tickets, not the output: its messages can be collected meanwhile.
    sink.next(createInternalDelivery<Routed>(this.#envelope(output), this.#settlement, { tickets, sink: name, fromNothing: from.length === 0 }));
    return undefined;
  }

  /** An output built from one open input alone. */
  #routeOne(sink: Subject<Delivery>, name: string, ticket: Ticket, output: Output): void {
    // Sent by an earlier run of the pipeline already: a restart does not send it twice.
    const skip = ticket.skip?.get(name) ?? 0;
    if (skip > 0) {
      ticket.skip?.set(name, skip - 1);
      this.#counters.count('handler.outputs.skipped', { bridge: this.#bridge, sink: name });
      this.#tracker.holdOne(ticket);
      this.#tracker.confirmOne(ticket);
      return;
    }
    noteRouted(ticket, name);
    this.#tracker.holdOne(ticket);
    sink.next(createInternalDelivery<Routed>(this.#envelope(output), this.#settlement, ticket));
  }

  /** The envelope of an output, whose origin is this bridge (and the device it is about). */
  #envelope(output: Output): Envelope {
    const { id, topic, payload, headers, timestamp, key, clientId } = output;
    return createEnvelope({ id, topic, payload, headers, timestamp, key, origin: this.#origin(clientId) });
  }

  /** One origin object per device the outputs are about, shared by their envelopes (a handful of devices, or thousands). */
  #origin(clientId: string | undefined): Origin {
    const known = this.#origins.get(clientId);
    if (known !== undefined) return known;
    if (this.#origins.size >= MAX_ORIGINS_KEPT) this.#origins.clear();
    // Frozen, as the MQTT intake's are: one object is every output's of the device.
    const origin: Origin = Object.freeze(clientId === undefined ? { source: this.#source } : { source: this.#source, clientId });
    this.#origins.set(clientId, origin);
    return origin;
  }

  /** An output built from messages already settled: sent, but nothing waits for it. */
  #lateOutput(sink: string, count: number): void {
    this.#counters.count('handler.outputs.after_settle', { bridge: this.#bridge, sink }, count);
    if (this.#toldLate) return;
    this.#toldLate = true;
    this.#logger.warn(
      { sink },
      'an output was built from a message that had settled already (an earlier output from it was confirmed, or it was done): it is sent, but a crash before it is written loses it. Call keep() on a message you build later outputs from',
    );
  }
}

/** The dead letter's reason for a message the handler failed on: the error and where it was thrown. */
export function culpritError(bridge: string, ticket: Ticket, error: unknown): FerryError {
  if (error instanceof FerryError && error.code === 'MESSAGE_REJECTED' && !error.retryable) return error;
  const stack = error instanceof Error && error.stack !== undefined ? `\n${error.stack.split('\n').slice(1, 6).join('\n')}` : '';
  const { envelope } = ticket.delivery;
  return new FerryError('MESSAGE_REJECTED', `the handler of bridge '${bridge}' failed on message ${envelope.id} on '${envelope.topic}': ${describeError(error)}${stack}`, {
    bridge,
    topic: envelope.topic,
    retryable: false,
    cause: error,
  });
}

export function describeValue(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  if (typeof value === 'object') return `an object (${Object.keys(value).slice(0, 5).join(', ') || 'no keys'})`;
  return `a ${typeof value}`;
}
