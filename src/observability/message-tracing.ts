import { type Context, type Link, ROOT_CONTEXT, type Span, SpanKind, SpanStatusCode, TraceFlags, type Tracer, context, trace } from '@opentelemetry/api';
import type { Logger } from 'pino';
import type { Delivery } from '../core/delivery.ts';
import type { Envelope } from '../core/envelope.ts';
import { type MessageTracing, type SinkTracing, type TracedMessage, parseTraceparent, sampledTraceparent } from '../core/tracing.ts';

/**
 * Message spans over the OpenTelemetry API (loaded with the SDK, only while traces are
 * exported). The sampling decision is taken here, before any span object exists, so that an
 * unsampled message allocates nothing: parent-based on the message's `traceparent`, else
 * `ratio`. The provider's own sampler then keeps every span it is asked for.
 */
export function messageTracing(tracer: Tracer, ratio: number, logger: Logger): MessageTracing {
  return {
    ingress: (bridge, envelope) => {
      const header = envelope.headers['traceparent'];
      let parent: Context = ROOT_CONTEXT;
      if (header !== undefined) {
        const remote = parseTraceparent(header);
        if (remote !== undefined) {
          if (!remote.sampled) return undefined;
          parent = trace.setSpanContext(ROOT_CONTEXT, { traceId: remote.traceId, spanId: remote.spanId, traceFlags: TraceFlags.SAMPLED, isRemote: true });
        } else if (!sampleRoot(ratio)) return undefined;
      } else if (!sampleRoot(ratio)) return undefined;
      return ingressSpan(tracer, parent, bridge, envelope);
    },
    sink: (bridge, sink) => sinkTracing(tracer, bridge, sink, logger),
  };
}

function sampleRoot(ratio: number): boolean {
  return ratio >= 1 || (ratio > 0 && Math.random() < ratio);
}

function ingressSpan(tracer: Tracer, parent: Context, bridge: string, envelope: Envelope): TracedMessage {
  const { origin } = envelope;
  const span = tracer.startSpan(
    `receive ${bridge}`,
    {
      kind: SpanKind.CONSUMER,
      startTime: envelope.timestamp,
      attributes: {
        'ferry.bridge': bridge,
        'ferry.source': origin.source,
        'messaging.message.id': envelope.id,
        'messaging.destination.name': envelope.topic,
        'messaging.message.body.size': envelope.payload.byteLength,
        ...(origin.clientId === undefined ? {} : { 'messaging.client.id': origin.clientId }),
        ...(origin.qos === undefined ? {} : { 'ferry.qos': origin.qos }),
      },
    },
    parent,
  );
  const { traceId, spanId } = span.spanContext();
  const traced: Envelope = { ...envelope, headers: { ...envelope.headers, traceparent: `00-${traceId}-${spanId}-01` } };
  return {
    envelope: traced,
    end: (outcome) => {
      if (outcome !== undefined) span.setAttribute('ferry.outcome', outcome);
      span.end();
    },
  };
}

function sinkTracing(tracer: Tracer, bridge: string, sink: string, logger: Logger): SinkTracing {
  return {
    batch: async (batch, write) => {
      let sampled: Delivery[] | undefined;
      for (const delivery of batch) {
        if (sampledTraceparent(delivery.envelope.headers['traceparent'])) (sampled ??= []).push(delivery);
      }
      if (sampled === undefined) return write();
      const links: Link[] = [];
      const children: Span[] = [];
      for (const delivery of sampled) {
        const parent = parseTraceparent(delivery.envelope.headers['traceparent'] as string);
        if (parent === undefined) continue;
        const spanContext = { traceId: parent.traceId, spanId: parent.spanId, traceFlags: TraceFlags.SAMPLED, isRemote: true };
        links.push({ context: spanContext });
        children.push(
          tracer.startSpan(
            `send ${sink}`,
            { kind: SpanKind.PRODUCER, attributes: { 'ferry.bridge': bridge, 'ferry.sink': sink, 'messaging.message.id': delivery.envelope.id } },
            trace.setSpanContext(ROOT_CONTEXT, spanContext),
          ),
        );
      }
      const span = tracer.startSpan(`write ${sink}`, {
        kind: SpanKind.CLIENT,
        links,
        attributes: { 'ferry.bridge': bridge, 'ferry.sink': sink, 'messaging.batch.message_count': batch.length },
      });
      const end = (error?: unknown) => {
        for (const s of [span, ...children]) {
          if (error !== undefined) s.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
          s.end();
        }
      };
      // Lines logged during the write carry this span's trace_id and span_id.
      return context.with(trace.setSpan(ROOT_CONTEXT, span), async () => {
        logger.debug({ bridge, sink, messages: batch.length, sampled: sampled.length }, 'writing a traced batch');
        try {
          const result = await write();
          end();
          return result;
        } catch (error) {
          end(error);
          throw error;
        }
      });
    },
  };
}
