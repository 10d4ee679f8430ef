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
   * each of which gets a child span for this sink's write, and gives `write` that span's ids
   * (for the lines logged about the write); calls `write` with none when no message is sampled.
   */
  batch<T>(batch: readonly Delivery[], write: (span: SpanIds | undefined) => Promise<T>): Promise<T>;
}

/** The ids of a span, as the lines logged about it carry them (`trace_id`, `span_id`). */
export interface SpanIds {
  readonly traceId: string;
  readonly spanId: string;
}

const NO_IDS = {};

/**
 * The log fields naming `span`: `trace_id` and `span_id`, as OTLP log export reads them (a line
 * with both is a record of that span); none without a span.
 */
export function spanFields(span: SpanIds | undefined): { trace_id?: string; span_id?: string } {
  return span === undefined ? NO_IDS : { trace_id: span.traceId, span_id: span.spanId };
}

// The span of the traced batch write that failed with an error. Nacks and failed SinkEvents
// carry the error object itself through every stage (fan-out, handlers, the buffer reader), so
// the line that finally logs it finds the span without any stage passing it on. Weak: an error
// forgotten takes its entry with it. Filled only by traced writes (sampled messages).
const failedIn = new WeakMap<Error, SpanIds>();

/**
 * Notes that `error` ended (or refused a message of) the write `span`; undefined for a write not
 * traced, which forgets a span noted before (a sink may throw the same error object again).
 */
export function noteFailedSpan(error: Error, span: SpanIds | undefined): void {
  if (span === undefined) failedIn.delete(error);
  else failedIn.set(error, span);
}

/** The log fields naming the traced write that failed with `error`; none when it was not traced. */
export function failedSpanFields(error: unknown): { trace_id?: string; span_id?: string } {
  return typeof error === 'object' && error !== null ? spanFields(failedIn.get(error as Error)) : NO_IDS;
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
