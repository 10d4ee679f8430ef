import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { Envelope } from '../core/envelope.ts';
import { type MessageTracing, type SinkTracing, type TracedMessage, parseTraceparent, sampledTraceparent, spanFields } from '../core/tracing.ts';
import { type FinishedSpan, SpanKind } from './span-export.ts';

/** Where finished spans go (a SpanExport). */
export interface SpanSink {
  add(span: FinishedSpan): void;
}

type Traceparent = NonNullable<ReturnType<typeof parseTraceparent>>;

/**
 * Message spans, recorded as plain objects (span-export.ts sends them). The sampling decision
 * comes first, so that an unsampled message allocates nothing: parent-based on the message's
 * `traceparent`, else `ratio`.
 */
export function messageTracing(spans: SpanSink, ratio: number, logger: Logger): MessageTracing {
  return {
    ingress: (bridge, envelope) => {
      const header = envelope.headers['traceparent'];
      const parent = header === undefined ? undefined : parseTraceparent(header);
      if (parent === undefined ? !sampleRoot(ratio) : !parent.sampled) return undefined;
      return new IngressSpan(spans, bridge, envelope, parent);
    },
    sink: (bridge, sink) => sinkTracing(spans, bridge, sink, logger),
  };
}

function sampleRoot(ratio: number): boolean {
  return ratio >= 1 || (ratio > 0 && Math.random() < ratio);
}

/** Epoch milliseconds with the monotonic clock's fraction. */
const now = () => performance.timeOrigin + performance.now();

// Ids are cut from a pool of random bytes in hex, refilled every 256 spans: one crypto call and
// one hex conversion for all of them; each id is a slice of that string (V8 shares its chars).
const POOL_BYTES = 4096;
let pool = '';
let used = POOL_BYTES;
const ZERO = { 8: '0'.repeat(16), 16: '0'.repeat(32) };

/** A random trace (16 bytes) or span (8 bytes) id in hex, never all zero (which W3C calls invalid). */
function randomId(bytes: 8 | 16): string {
  for (;;) {
    if (used + bytes > POOL_BYTES) {
      pool = randomBytes(POOL_BYTES).toString('hex');
      used = 0;
    }
    const id = pool.slice(used * 2, (used + bytes) * 2);
    used += bytes;
    if (id !== ZERO[bytes]) return id;
  }
}

// A span a sink writes a message under has the message's `traceparent` as parent: this process's
// own `receive` span (a local parent), or one from elsewhere (a remote parent): a receive span of
// an earlier run, or the device's span when the message was stored before traces were exported.
// Receive span ids carry a mark to tell them apart without keeping any: their last 4 hex digits
// are a hash of the first 12 keyed with a number drawn at start. A foreign id has the mark by
// chance once in 65,536 (its span is then flagged local).
const MARK_KEY = randomBytes(4).readUInt32LE(0);

/** FNV-1a of the first 12 hex digits of a span id, seeded with the process's key: 4 hex digits. */
function mark(spanId: string): string {
  let hash = (0x811c9dc5 ^ MARK_KEY) >>> 0;
  for (let i = 0; i < 12; i++) hash = Math.imul(hash ^ spanId.charCodeAt(i), 0x01000193);
  return ((hash ^ (hash >>> 16)) & 0xffff).toString(16).padStart(4, '0');
}

/** A span id with this process's mark, never all zero. */
function markedSpanId(): string {
  for (;;) {
    const head = randomId(8).slice(0, 12);
    const id = head + mark(head);
    if (id !== ZERO[8]) return id;
  }
}

/** Whether a span id was made by markedSpanId() in this process. */
const startedHere = (spanId: string) => spanId.endsWith(mark(spanId));

/** The `receive <bridge>` span of a sampled message, from its arrival to the buffer commit. */
class IngressSpan implements TracedMessage {
  readonly envelope: Envelope;
  readonly #spans: SpanSink;
  readonly #bridge: string;
  readonly #parent: Traceparent | undefined;
  readonly #traceId: string;
  readonly #spanId: string;

  constructor(spans: SpanSink, bridge: string, envelope: Envelope, parent: Traceparent | undefined) {
    this.#spans = spans;
    this.#bridge = bridge;
    this.#parent = parent;
    this.#traceId = parent?.traceId ?? randomId(16);
    this.#spanId = markedSpanId();
    this.envelope = { ...envelope, headers: { ...envelope.headers, traceparent: `00-${this.#traceId}-${this.#spanId}-01` } };
  }

  end(outcome?: string): void {
    const { origin, id, topic, payload, timestamp } = this.envelope;
    const attributes: Record<string, string | number> = {
      'ferry.bridge': this.#bridge,
      'ferry.source': origin.source,
      'messaging.message.id': id,
      'messaging.destination.name': topic,
      'messaging.message.body.size': payload.byteLength,
    };
    if (origin.clientId !== undefined) attributes['messaging.client.id'] = origin.clientId;
    if (origin.qos !== undefined) attributes['ferry.qos'] = origin.qos;
    if (outcome !== undefined) attributes['ferry.outcome'] = outcome;
    this.#spans.add({
      traceId: this.#traceId,
      spanId: this.#spanId,
      parentSpanId: this.#parent?.spanId,
      remoteParent: this.#parent !== undefined,
      name: `receive ${this.#bridge}`,
      kind: SpanKind.consumer,
      start: timestamp,
      end: now(),
      attributes,
      links: undefined,
      error: undefined,
    });
  }
}

function sinkTracing(spans: SpanSink, bridge: string, sink: string, logger: Logger): SinkTracing {
  const sendName = `send ${sink}`;
  const writeName = `write ${sink}`;
  return {
    batch: async (batch, write) => {
      let sampled: { parent: Traceparent; id: string; remote: boolean }[] | undefined;
      for (const { envelope } of batch) {
        const header = envelope.headers['traceparent'];
        if (header === undefined || !sampledTraceparent(header)) continue;
        const parent = parseTraceparent(header);
        if (parent !== undefined) (sampled ??= []).push({ parent, id: envelope.id, remote: !startedHere(parent.spanId) });
      }
      if (sampled === undefined) return write(undefined);
      const traceId = randomId(16);
      const spanId = randomId(8);
      const ids = { traceId, spanId };
      logger.debug({ bridge, sink, messages: batch.length, sampled: sampled.length, ...spanFields(ids) }, 'writing a traced batch');
      const start = now();
      let error: string | undefined;
      try {
        return await write(ids);
      } catch (failure) {
        error = failure instanceof Error ? failure.message : String(failure);
        throw failure;
      } finally {
        const end = now();
        spans.add({
          traceId,
          spanId,
          parentSpanId: undefined,
          remoteParent: false,
          name: writeName,
          kind: SpanKind.client,
          start,
          end,
          attributes: { 'ferry.bridge': bridge, 'ferry.sink': sink, 'messaging.batch.message_count': batch.length },
          links: sampled.map(({ parent, remote }) => ({ traceId: parent.traceId, spanId: parent.spanId, remote })),
          error,
        });
        for (const { parent, id, remote } of sampled) {
          spans.add({
            traceId: parent.traceId,
            spanId: randomId(8),
            parentSpanId: parent.spanId,
            remoteParent: remote,
            name: sendName,
            kind: SpanKind.producer,
            start,
            end,
            attributes: { 'ferry.bridge': bridge, 'ferry.sink': sink, 'messaging.message.id': id },
            links: undefined,
            error,
          });
        }
      }
    },
  };
}
