import pino from 'pino';
import { Subject } from 'rxjs';
import { createDelivery, type Delivery } from '../../src/core/delivery.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import type { SinkEvent } from '../../src/core/stream.ts';
import { deviceSink } from '../../src/mqtt/device-sink.ts';
import type { EmbeddedBroker } from '../../src/mqtt/embedded-broker.ts';
import type { CounterRegistry } from '../../src/observability/counters.ts';

/** A command handed to a devices sink, and how the sink settled it so far. */
export interface SentCommand {
  readonly delivery: Delivery;
  /** 'pending', 'acked' or the nack's error. */
  outcome(): 'pending' | 'acked' | Error;
}

/**
 * A devices sink of bridge `bridge` with `config`, publishing on `broker` and counting in
 * `counters`: its input, the events it emitted, whether it completed, and `send`, which hands it
 * a command as a Kafka source does (topic ferry.commands) with the key and headers of `fields`.
 */
export function devicesSinkOn(broker: EmbeddedBroker, counters: CounterRegistry, bridge: string, config: Record<string, unknown>) {
  const input = new Subject<Delivery>();
  const events: SinkEvent[] = [];
  const sink = deviceSink.create(deviceSink.schema.parse(config), { logger: pino({ level: 'silent' }), counters, dataDir: '/nonexistent', bridge }, { broker });
  let completed = false;
  const subscription = sink(input).subscribe({ next: (e) => events.push(e), complete: () => (completed = true) });
  const send = (payload: string | Buffer, fields: { key?: string; headers?: Record<string, string> } = {}): SentCommand => {
    let outcome: 'pending' | 'acked' | Error = 'pending';
    const delivery = createDelivery(createEnvelope({ topic: 'ferry.commands', payload, origin: { source: 'kafka' }, ...fields }), {
      onAck: () => (outcome = 'acked'),
      onNack: (error) => (outcome = error),
    });
    input.next(delivery);
    return { delivery, outcome: () => outcome };
  };
  return { input, events, send, subscription, completed: () => completed };
}
