import type { Envelope } from './envelope.ts';

/**
 * An envelope plus the duty to settle it. Whoever takes responsibility for the message
 * calls `ack()` exactly once; `nack(error)` means "not taken: retry or dead-letter".
 * Settling twice is a bug in the caller: the second call is ignored and reported to
 * `onDoubleSettle` so tests can fail on it.
 */
export interface Delivery {
  readonly envelope: Envelope;
  ack(): void;
  nack(error: Error): void;
  /** 'pending' until the first ack or nack. */
  readonly state: DeliveryState;
  /**
   * True once nobody waits for this delivery's settlement any more and its sender still has
   * the message: a device's connection closed before the PUBACK, so the device sends it again
   * on its next connection. Whoever has not stored the message yet may then nack it instead
   * of storing it (issue 16, item 9: stored, it would be there twice). Absent: never abandoned.
   */
  abandoned?(): boolean;
}

export type DeliveryState = 'pending' | 'acked' | 'nacked';

export interface DeliveryHandlers {
  onAck(): void;
  onNack(error: Error): void;
  /** Called when ack or nack is called after the delivery was already settled. */
  onDoubleSettle?(attempted: 'ack' | 'nack', state: DeliveryState): void;
  /** The delivery's `abandoned()`; never abandoned when absent. */
  isAbandoned?(): boolean;
}

export function createDelivery(envelope: Envelope, handlers: DeliveryHandlers): Delivery {
  return new SingleDelivery(envelope, OWN_HANDLERS, handlers);
}

/**
 * Handlers shared by many deliveries, each call given the delivery's own context: a source
 * that makes a delivery per message passes one set of methods and a small object of the
 * message's state, instead of a handler object and its closures per message.
 */
export interface SharedDeliveryHandlers<C> {
  onAck(context: C): void;
  onNack(context: C, error: Error): void;
  onDoubleSettle?(context: C, attempted: 'ack' | 'nack', state: DeliveryState): void;
  isAbandoned?(context: C): boolean;
}

export function createSharedDelivery<C>(envelope: Envelope, handlers: SharedDeliveryHandlers<C>, context: C): Delivery {
  return new SingleDelivery(envelope, handlers, context);
}

/** createDelivery's handlers as shared ones, the delivery's context being its own handlers. */
const OWN_HANDLERS: SharedDeliveryHandlers<DeliveryHandlers> = {
  onAck: (handlers) => handlers.onAck(),
  onNack: (handlers, error) => handlers.onNack(error),
  onDoubleSettle: (handlers, attempted, state) => handlers.onDoubleSettle?.(attempted, state),
  isAbandoned: (handlers) => handlers.isAbandoned?.() === true,
};

/** A delivery's envelope and state, and what settling it does: shared by the two kinds below. */
abstract class SettledOnce<C> {
  readonly envelope: Envelope;
  state: DeliveryState = 'pending';
  readonly #handlers: SharedDeliveryHandlers<C>;
  readonly #context: C;

  constructor(envelope: Envelope, handlers: SharedDeliveryHandlers<C>, context: C) {
    this.envelope = envelope;
    this.#handlers = handlers;
    this.#context = context;
  }

  /** Settles once (a nack with `error`); a second settle is reported, not done. */
  protected settle(attempted: 'ack' | 'nack', error: Error | undefined): void {
    if (this.state !== 'pending') {
      this.#handlers.onDoubleSettle?.(this.#context, attempted, this.state);
      return;
    }
    if (attempted === 'ack') {
      this.state = 'acked';
      this.#handlers.onAck(this.#context);
    } else {
      this.state = 'nacked';
      this.#handlers.onNack(this.#context, error as Error);
    }
  }

  protected isAbandoned(): boolean {
    return this.state === 'pending' && this.#handlers.isAbandoned?.(this.#context) === true;
  }
}

/**
 * A delivery without a handler object and closures of its own per message (a gateway at
 * 20,000 messages/s makes a few deliveries per message; those showed in its GC time). `ack`,
 * `nack` and `state` are own properties, so that `{ ...delivery, envelope }` still works and
 * `ack` and `nack` may be called detached (`promise.then(delivery.ack, delivery.nack)`).
 */
class SingleDelivery<C> extends SettledOnce<C> implements Delivery {
  readonly ack = (): void => this.settle('ack', undefined);
  readonly nack = (error: Error): void => this.settle('nack', error);
  readonly abandoned = (): boolean => this.isAbandoned();
}

/**
 * Like createSharedDelivery, with `ack`, `nack` and `abandoned` as methods of a class rather
 * than functions of each delivery: a delivery is one object, where one with functions of its
 * own is five (three functions and their context). Only for deliveries that stay inside
 * Ferry's own code, which calls them as methods and never copies them: a copy
 * (`{ ...delivery }`) has no `ack`, and a detached `ack` has no delivery. A handler bridge
 * makes two per message (its buffer's to the handler, its output's to the sink), and they
 * live until the sink's write is confirmed.
 */
export function createInternalDelivery<C>(envelope: Envelope, handlers: SharedDeliveryHandlers<C>, context: C): Delivery {
  return new MethodDelivery(envelope, handlers, context);
}

class MethodDelivery<C> extends SettledOnce<C> implements Delivery {
  ack(): void {
    this.settle('ack', undefined);
  }

  nack(error: Error): void {
    this.settle('nack', error);
  }

  abandoned(): boolean {
    return this.isAbandoned();
  }
}

/**
 * The handlers of a delivery that stands for `upstream` (another envelope, one of several
 * copies): settling it settles the upstream one, and it is abandoned when that one is.
 */
export function settlesUpstream(upstream: Delivery): DeliveryHandlers {
  return { onAck: () => upstream.ack(), onNack: (error) => upstream.nack(error), isAbandoned: () => upstream.abandoned?.() === true };
}

/** Like DeliveryHandlers, for deliveries made together: each call names the delivery by its index. */
export interface IndexedDeliveryHandlers {
  onAck(index: number): void;
  onNack(index: number, error: Error): void;
  onDoubleSettle?(index: number, attempted: 'ack' | 'nack', state: DeliveryState): void;
}

/**
 * A delivery for each envelope, all reporting to one set of handlers with their index: no
 * handler object per message (the buffer hands a sink a window of them at once).
 */
export function createDeliveries(envelopes: readonly Envelope[], handlers: IndexedDeliveryHandlers): Delivery[] {
  const deliveries = new Array<Delivery>(envelopes.length);
  for (let i = 0; i < envelopes.length; i++) deliveries[i] = new IndexedDelivery(envelopes[i] as Envelope, i, handlers);
  return deliveries;
}

class IndexedDelivery implements Delivery {
  readonly envelope: Envelope;
  state: DeliveryState = 'pending';
  readonly #index: number;
  readonly #handlers: IndexedDeliveryHandlers;

  constructor(envelope: Envelope, index: number, handlers: IndexedDeliveryHandlers) {
    this.envelope = envelope;
    this.#index = index;
    this.#handlers = handlers;
  }

  readonly ack = (): void => {
    if (this.state !== 'pending') {
      this.#handlers.onDoubleSettle?.(this.#index, 'ack', this.state);
      return;
    }
    this.state = 'acked';
    this.#handlers.onAck(this.#index);
  };

  readonly nack = (error: Error): void => {
    if (this.state !== 'pending') {
      this.#handlers.onDoubleSettle?.(this.#index, 'nack', this.state);
      return;
    }
    this.state = 'nacked';
    this.#handlers.onNack(this.#index, error);
  };
}

/**
 * Splits one upstream delivery into `count` downstream ones: the upstream is acked when all
 * of them are acked, and nacked on the first nack (the others' later settles are ignored).
 * Used when one message goes to several bridges or sinks.
 */
export function fanOut(upstream: Delivery, count: number): Delivery[] {
  if (count === 0) {
    upstream.ack();
    return [];
  }
  // One part settles the upstream exactly as it would itself.
  if (count === 1) return [upstream];
  let remaining = count;
  let failed = false;
  const out: Delivery[] = [];
  for (let i = 0; i < count; i++) {
    out.push(
      createDelivery(upstream.envelope, {
        onAck: () => {
          remaining -= 1;
          if (remaining === 0 && !failed) upstream.ack();
        },
        onNack: (error) => {
          if (failed) return;
          failed = true;
          upstream.nack(error);
        },
        isAbandoned: () => upstream.abandoned?.() === true,
      }),
    );
  }
  return out;
}

/**
 * Splits a delivery into `count` parts like `fanOut`, except that the upstream settles only
 * once every part has: acked when all were, else nacked with the first error, after `parted`
 * heard which parts were acked (by index). For a source that must know what a partial failure
 * stored: the MQTT intake then gives a device's resend only to the parts that did not take it.
 */
export function fanOutAll(upstream: Delivery, count: number, parted: (acked: readonly boolean[]) => void): Delivery[] {
  const acked = new Array<boolean>(count).fill(false);
  let remaining = count;
  let error: Error | undefined;
  const settled = () => {
    remaining -= 1;
    if (remaining > 0) return;
    if (error === undefined) {
      upstream.ack();
      return;
    }
    parted(acked);
    upstream.nack(error);
  };
  return Array.from({ length: count }, (_, i) =>
    createDelivery(upstream.envelope, {
      onAck: () => {
        acked[i] = true;
        settled();
      },
      onNack: (cause) => {
        error ??= cause;
        settled();
      },
      isAbandoned: () => upstream.abandoned?.() === true,
    }),
  );
}
