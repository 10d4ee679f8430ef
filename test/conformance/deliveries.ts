import { createDelivery, type Delivery } from '../../src/core/delivery.ts';
import { createEnvelope, type Envelope } from '../../src/core/envelope.ts';

/** Deliveries that record how they were settled, and any second settle (a bug). */
export interface Tracked {
  readonly deliveries: Delivery[];
  readonly acked: string[];
  readonly nacked: Map<string, Error>;
  readonly doubleSettles: string[];
  /** Resolves when every delivery is settled. */
  settled(): Promise<void>;
}

/** Readings differ across every call in a process, so two sets' payloads never collide by chance. */
let nextReading = 0;

export function trackedDeliveries(count: number, topic = 'devices/d1/telemetry/t', clientId = 'd1'): Tracked {
  return trackedEnvelopes(
    Array.from({ length: count }, (_, seq) =>
      createEnvelope({
        topic,
        payload: JSON.stringify({ seq, value: nextReading++ }),
        origin: { source: 'test', clientId, qos: 1 },
      }),
    ),
  );
}

/**
 * A tracked delivery for each envelope, as a source hands them (again, after a nack, with the
 * same envelopes). `onNack` sees each nack as it happens, before `settled()` resolves.
 */
export function trackedEnvelopes(envelopes: readonly Envelope[], onNack: (envelope: Envelope, error: Error) => void = () => {}): Tracked {
  const acked: string[] = [];
  const nacked = new Map<string, Error>();
  const doubleSettles: string[] = [];
  let remaining = envelopes.length;
  let resolve: () => void = () => {};
  const allSettled = new Promise<void>((r) => {
    resolve = r;
    if (remaining === 0) r();
  });
  const done = () => {
    remaining -= 1;
    if (remaining === 0) resolve();
  };
  const deliveries = envelopes.map((envelope) =>
    createDelivery(envelope, {
      onAck: () => {
        acked.push(envelope.id);
        done();
      },
      onNack: (error) => {
        nacked.set(envelope.id, error);
        onNack(envelope, error);
        done();
      },
      onDoubleSettle: () => doubleSettles.push(envelope.id),
    }),
  );
  return { deliveries, acked, nacked, doubleSettles, settled: () => allSettled };
}
