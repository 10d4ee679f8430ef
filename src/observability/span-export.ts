// The export of message spans: plain records batched here and written as OTLP/JSON by our own
// serializer, sent through the OTLP exporters' HTTP delegate (its retries, timeout, compression
// and OTEL_EXPORTER_OTLP_* settings). The SDK's tracer, spans and batch processor are not used:
// at the default ratio they took about a fifth of the gateway's CPU (docs/benchmarks.md).
import { convertLegacyHttpOptions, createOtlpHttpExportDelegate } from '@opentelemetry/otlp-exporter-base/node-http';
import type { Logger } from 'pino';
import type { OtlpTarget } from '../config/telemetry.ts';

/** OTLP's span kinds. */
export const SpanKind = { client: 3, producer: 4, consumer: 5 } as const;

/** A finished span as message-tracing.ts records it. Times are epoch milliseconds (fractions kept). */
export interface FinishedSpan {
  readonly traceId: string;
  readonly spanId: string;
  /**
   * The parent span, set for a child; `remoteParent` when it was started in another process (a
   * device's or a backend's `traceparent`), not when it is this process's own span.
   */
  readonly parentSpanId: string | undefined;
  readonly remoteParent: boolean;
  readonly name: string;
  readonly kind: (typeof SpanKind)[keyof typeof SpanKind];
  readonly start: number;
  readonly end: number;
  readonly attributes: Readonly<Record<string, string | number>>;
  /** Linked spans; `remote` as for the parent. */
  readonly links: readonly { readonly traceId: string; readonly spanId: string; readonly remote: boolean }[] | undefined;
  /** The failure that ended it: status ERROR with this message. */
  readonly error: string | undefined;
}

export interface SpanExportOptions {
  /** Spans per export request. */
  readonly batchSize: number;
  /** How long a span waits at most before it is exported. */
  readonly delayMs: number;
  /** Spans held while an export is in flight; newer ones are dropped beyond it. */
  readonly maxQueue: number;
}

/** 1,024 spans a request (about 650 KB of JSON), at least every 5 s, at most 8,192 held. */
export const SPAN_EXPORT_DEFAULTS: SpanExportOptions = { batchSize: 1024, delayMs: 5000, maxQueue: 8192 };

/**
 * Batches finished spans and exports them, one request in flight at a time (as the SDK's batch
 * span processor does): a full batch goes at once, a partial one after `delayMs`.
 */
export class SpanExport {
  readonly #delegate;
  readonly #options: SpanExportOptions;
  readonly #logger: Logger;
  #queue: FinishedSpan[] = [];
  #timer: NodeJS.Timeout | undefined;
  #inFlight: Promise<void> | undefined;
  #dropped = 0;
  #failing = false;
  #stopped = false;

  constructor(target: OtlpTarget, resource: Readonly<Record<string, string>>, version: string, logger: Logger, options: SpanExportOptions = SPAN_EXPORT_DEFAULTS) {
    const request = traceRequest(resource, version);
    const serializer = {
      serializeRequest: (spans: readonly FinishedSpan[]) => Buffer.from(JSON.stringify(request(spans))),
      deserializeResponse: (data: Uint8Array) => (data.length === 0 ? {} : (JSON.parse(Buffer.from(data).toString('utf8')) as object)),
    };
    const http = convertLegacyHttpOptions({ url: target.url, headers: { ...target.headers } }, 'TRACES', 'v1/traces', { 'Content-Type': 'application/json' });
    this.#delegate = createOtlpHttpExportDelegate(http, serializer, 'ferry_span_exporter', { name: 'span', countItems: (spans) => spans.length }, undefined);
    this.#options = options;
    this.#logger = logger;
  }

  add(span: FinishedSpan): void {
    if (this.#stopped) return;
    if (this.#queue.length >= this.#options.maxQueue) {
      if (this.#dropped++ === 0) this.#logger.warn({ held: this.#queue.length }, 'span export: the queue is full, dropping spans until it drains');
      return;
    }
    this.#queue.push(span);
    if (this.#inFlight === undefined) this.#schedule();
  }

  /** With no export in flight: a full batch goes now, a partial one within `delayMs`. */
  #schedule(): void {
    // Once stopped, shutdown() sends what is left.
    if (this.#stopped) return;
    if (this.#queue.length >= this.#options.batchSize) this.#exportNext();
    else if (this.#queue.length > 0) this.#timer ??= setTimeout(() => this.#exportNext(), this.#options.delayMs).unref();
  }

  /**
   * Exports what is held, batch after batch, then stops the transport. Once an export fails
   * (the receiver is down or hangs) the rest is dropped: each further batch would wait out the
   * exporter's retries and timeout again.
   */
  async shutdown(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#inFlight;
    while (this.#queue.length > 0 && !this.#failing) {
      this.#exportNext();
      await this.#inFlight;
    }
    if (this.#queue.length > 0) {
      this.#logger.warn({ dropped: this.#queue.length }, `span export: the receiver is failing, ${this.#queue.length} spans held at shutdown are dropped`);
      this.#queue = [];
    }
    await this.#delegate.shutdown();
  }

  #exportNext(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#queue.length === 0) return;
    const spans = this.#queue.length <= this.#options.batchSize ? this.#queue : this.#queue.splice(0, this.#options.batchSize);
    if (spans === this.#queue) this.#queue = [];
    this.#inFlight = new Promise<void>((resolve) => {
      this.#delegate.export(spans, (result) => {
        if (result.error === undefined) {
          if (this.#failing) this.#logger.info('span export: the receiver takes spans again');
          this.#failing = false;
        } else if (!this.#failing) {
          this.#failing = true;
          this.#logger.warn({ err: result.error, spans: spans.length }, 'span export failed, the spans are dropped (logged once until an export succeeds)');
        }
        resolve();
      });
    }).then(() => {
      this.#inFlight = undefined;
      if (this.#dropped > 0) this.#logger.warn({ dropped: this.#dropped }, 'span export: spans were dropped while the queue was full');
      this.#dropped = 0;
      this.#schedule();
    });
  }
}

/** An OTLP/JSON ExportTraceServiceRequest of `spans`, for one resource and the `ferry` scope. */
export function traceRequest(resource: Readonly<Record<string, string>>, version: string): (spans: readonly FinishedSpan[]) => object {
  const head = { resource: { attributes: keyValues(resource) }, scope: { name: 'ferry', version } };
  return (spans) => ({ resourceSpans: [{ resource: head.resource, scopeSpans: [{ scope: head.scope, spans: spans.map(otlpSpan) }] }] });
}

type AnyValue = { stringValue: string } | { intValue: number } | { doubleValue: number };

const anyValue = (value: string | number): AnyValue =>
  typeof value === 'string' ? { stringValue: value } : Number.isInteger(value) ? { intValue: value } : { doubleValue: value };

function keyValues(attributes: Readonly<Record<string, string | number>>): { key: string; value: AnyValue }[] {
  const keys = Object.keys(attributes);
  const out = new Array<{ key: string; value: AnyValue }>(keys.length);
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i] as string;
    out[i] = { key, value: anyValue(attributes[key] as string | number) };
  }
  return out;
}

/**
 * Epoch milliseconds as OTLP's decimal nanoseconds. A double holds them to 256 ns (above 2^53),
 * which is finer than the clock's precision here, and prints them without an exponent (< 1e21).
 */
const nanos = (ms: number): string => String(Math.round(ms * 1e6));

// W3C trace flags (sampled) with OTLP's "has is_remote" bit, and "is_remote" for a remote parent
// (or link).
const LOCAL_FLAGS = 0x101;
const REMOTE_FLAGS = 0x301;

/** One span in OTLP/JSON; the fields left undefined (no parent, links or error) are not written. */
function otlpSpan(span: FinishedSpan): object {
  return {
    traceId: span.traceId,
    spanId: span.spanId,
    parentSpanId: span.parentSpanId,
    flags: span.remoteParent ? REMOTE_FLAGS : LOCAL_FLAGS,
    name: span.name,
    kind: span.kind,
    startTimeUnixNano: nanos(span.start),
    endTimeUnixNano: nanos(Math.max(span.start, span.end)),
    attributes: keyValues(span.attributes),
    links: span.links?.map((link) => ({ traceId: link.traceId, spanId: link.spanId, flags: link.remote ? REMOTE_FLAGS : LOCAL_FLAGS })),
    status: span.error === undefined ? undefined : { code: 2, message: span.error },
  };
}
