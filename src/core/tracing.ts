import type { Delivery } from './delivery.ts';
import type { Envelope } from './envelope.ts';

/**
 * Tracing of messages, present only while trace export is on (the OpenTelemetry SDK is loaded
 * then and only then). Each call decides cheaply whether a message is sampled: one that is not
 * costs a header lookup and no allocation.
 */
export interface MessageTracing {
  /**
   * At the buffer's door: starts the message's span when it is sampled (parent-based: a W3C
   * `traceparent` header continues its trace and follows its sampled flag; otherwise the
   * configured ratio decides), and returns the envelope to store, whose `traceparent` names that
   * span, so that every sink passes it on (Kafka headers, `${header.traceparent}`, MQTT 5 user
   * properties). Undefined when not sampled.
   */
  ingress(bridge: string, envelope: Envelope): TracedMessage | undefined;
  /** The tracing of one sink's batch writes. */
  sink(bridge: string, sink: string): SinkTracing;
}

/** A sampled message between its arrival and the buffer commit. */
export interface TracedMessage {
  readonly envelope: Envelope;
  /** The message is stored (or dropped by the overflow policy: `outcome` says so). Ends its span. */
  end(outcome?: string): void;
}

/** Wraps one batch write of a sink. */
export interface SinkTracing {
  /**
   * Runs `write` inside a span for the batch that links the spans of its sampled messages,
   * each of which gets a child span for this sink's write; calls `write` alone when none is
   * sampled.
   */
  batch<T>(batch: readonly Delivery[], write: () => Promise<T>): Promise<T>;
}

/** `traceparent` version 00: `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`. */
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** The trace id, parent span id and sampled flag of a W3C traceparent; undefined when malformed or all zero. */
export function parseTraceparent(value: string): { traceId: string; spanId: string; sampled: boolean } | undefined {
  const match = TRACEPARENT.exec(value);
  if (match === null) return undefined;
  const [, traceId, spanId, flags] = match as unknown as [string, string, string, string];
  if (/^0+$/.test(traceId) || /^0+$/.test(spanId)) return undefined;
  return { traceId, spanId, sampled: (Number.parseInt(flags, 16) & 1) === 1 };
}

/** Whether a header value is a traceparent with the sampled flag, without parsing it. */
export function sampledTraceparent(value: string | undefined): boolean {
  return value !== undefined && value.length === 55 && value.startsWith('00-') && (Number.parseInt(value.charAt(54), 16) & 1) === 1;
}
