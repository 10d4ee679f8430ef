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
}

export type DeliveryState = 'pending' | 'acked' | 'nacked';

export interface DeliveryHandlers {
  onAck(): void;
  onNack(error: Error): void;
  /** Called when ack or nack is called after the delivery was already settled. */
  onDoubleSettle?(attempted: 'ack' | 'nack', state: DeliveryState): void;
}

export function createDelivery(envelope: Envelope, handlers: DeliveryHandlers): Delivery {
  let state: DeliveryState = 'pending';
  const settle = (attempt: 'ack' | 'nack', error?: Error): void => {
    if (state !== 'pending') {
      handlers.onDoubleSettle?.(attempt, state);
      return;
    }
    if (attempt === 'ack') {
      state = 'acked';
      handlers.onAck();
    } else {
      state = 'nacked';
      handlers.onNack(error ?? new Error('nacked'));
    }
  };
  return {
    envelope,
    ack: () => settle('ack'),
    nack: (error: Error) => settle('nack', error),
    get state() {
      return state;
    },
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
      }),
    );
  }
  return out;
}
