import type { Observable, OperatorFunction } from 'rxjs';
import type { Delivery } from './delivery.ts';

/**
 * A source emits deliveries. Subscribing connects it; unsubscribing stops it and releases
 * every resource it opened. It errors only when it cannot go on at all (its retries are
 * its own business).
 */
export type Source = Observable<Delivery>;

/**
 * A sink consumes deliveries and acks each one only after the upstream system confirmed
 * the write (Kafka ack, Postgres commit, MQTT PUBACK, SQLite commit). It nacks what it could
 * not write and reports every batch as a SinkEvent. Unsubscribing from the returned
 * observable stops the sink; completion of the input drains it (pending batches are
 * written) and then completes the output.
 */
export type Sink = (input: Observable<Delivery>) => Observable<SinkEvent>;

/**
 * `span`: the ids of the batch write's span when it was traced (a message of the batch was
 * sampled); the lines logged about the event carry them as `trace_id` and `span_id`.
 */
export type SinkEvent =
  | { readonly type: 'written'; readonly count: number; readonly bytes: number; readonly durationMs: number; readonly span?: { readonly traceId: string; readonly spanId: string } }
  | { readonly type: 'failed'; readonly count: number; readonly error: Error; readonly retryable: boolean; readonly span?: { readonly traceId: string; readonly spanId: string } };

/** An operator over deliveries: passes acks through untouched. */
export type DeliveryOperator = OperatorFunction<Delivery, Delivery>;
