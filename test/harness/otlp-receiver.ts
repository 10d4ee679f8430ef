import { type IncomingHttpHeaders, type IncomingMessage, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';

/** One span as OTLP/JSON carries it, with its resource's attributes flattened. */
export interface ReceivedSpan {
  readonly traceId: string;
  readonly spanId: string;
  readonly parentSpanId: string;
  readonly name: string;
  readonly kind: number;
  readonly attributes: Record<string, unknown>;
  readonly links: readonly { traceId: string; spanId: string }[];
  /** The status message of a span that ended in error (status code 2). */
  readonly error: string | undefined;
  readonly resource: Record<string, unknown>;
}

/** One data point of a metric, with the metric's name and kind. */
export interface ReceivedPoint {
  readonly metric: string;
  readonly kind: 'sum' | 'gauge' | 'histogram';
  readonly attributes: Record<string, unknown>;
  readonly value: number;
  readonly resource: Record<string, unknown>;
}

/**
 * An OTLP/HTTP receiver speaking the JSON encoding (what @opentelemetry/exporter-*-otlp-http
 * send): POST /v1/traces, /v1/metrics and /v1/logs (after any path prefix, with any query) on an
 * ephemeral loopback port. It keeps every request's URL and headers, every body as received
 * (`raw`, for scans) and decoded (spans, metric points, log records).
 */
export interface OtlpReceiver {
  readonly url: string;
  readonly requests: { readonly url: string; readonly headers: IncomingHttpHeaders }[];
  readonly raw: string[];
  readonly spans: ReceivedSpan[];
  readonly points: ReceivedPoint[];
  readonly logs: { readonly body: string; readonly traceId: string; readonly attributes: Record<string, unknown> }[];
  close(): Promise<void>;
}

type KeyValue = { key: string; value: Record<string, unknown> };

function attrs(list: readonly KeyValue[] | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const { key, value } of list ?? []) out[key] = anyValue(value);
  return out;
}

function anyValue(value: Record<string, unknown>): unknown {
  if ('stringValue' in value) return value['stringValue'];
  if ('intValue' in value) return Number(value['intValue']);
  if ('doubleValue' in value) return value['doubleValue'];
  if ('boolValue' in value) return value['boolValue'];
  return value;
}

async function body(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const bytes = Buffer.concat(chunks);
  return (req.headers['content-encoding'] === 'gzip' ? gunzipSync(bytes) : bytes).toString('utf8');
}

export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const receiver = {
    requests: [] as OtlpReceiver['requests'][number][],
    raw: [] as string[],
    spans: [] as ReceivedSpan[],
    points: [] as ReceivedPoint[],
    logs: [] as OtlpReceiver['logs'][number][],
  };
  const server = createServer((req, res) => {
    body(req).then(
      (text) => {
        receiver.requests.push({ url: req.url ?? '', headers: req.headers });
        receiver.raw.push(text);
        if (!/json/.test(req.headers['content-type'] ?? '')) {
          res.writeHead(415).end();
          return;
        }
        const parsed = JSON.parse(text) as Record<string, { resource?: { attributes?: KeyValue[] } }[]>;
        const path = new URL(req.url ?? '/', 'http://receiver').pathname;
        if (path.endsWith('/v1/traces')) collectSpans(parsed, receiver.spans);
        else if (path.endsWith('/v1/metrics')) collectPoints(parsed, receiver.points);
        else if (path.endsWith('/v1/logs')) collectLogs(parsed, receiver.logs);
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      },
      () => res.writeHead(400).end(),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { ...receiver, url: `http://127.0.0.1:${port}`, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

type Json = any;

function collectSpans(parsed: Json, out: ReceivedSpan[]): void {
  for (const rs of parsed.resourceSpans ?? []) {
    const resource = attrs(rs.resource?.attributes);
    for (const ss of rs.scopeSpans ?? []) {
      for (const s of ss.spans ?? []) {
        out.push({
          traceId: s.traceId,
          spanId: s.spanId,
          parentSpanId: s.parentSpanId ?? '',
          name: s.name,
          kind: s.kind,
          attributes: attrs(s.attributes),
          links: (s.links ?? []).map((l: Json) => ({ traceId: l.traceId, spanId: l.spanId })),
          error: s.status?.code === 2 ? String(s.status.message ?? '') : undefined,
          resource,
        });
      }
    }
  }
}

function collectPoints(parsed: Json, out: ReceivedPoint[]): void {
  for (const rm of parsed.resourceMetrics ?? []) {
    const resource = attrs(rm.resource?.attributes);
    for (const sm of rm.scopeMetrics ?? []) {
      for (const m of sm.metrics ?? []) {
        const kind = m.sum !== undefined ? 'sum' : m.gauge !== undefined ? 'gauge' : 'histogram';
        for (const p of (m.sum ?? m.gauge ?? m.histogram)?.dataPoints ?? []) {
          const value = kind === 'histogram' ? Number(p.count) : Number(p.asDouble ?? p.asInt ?? 0);
          out.push({ metric: m.name, kind, attributes: attrs(p.attributes), value, resource });
        }
      }
    }
  }
}

function collectLogs(parsed: Json, out: OtlpReceiver['logs'][number][]): void {
  for (const rl of parsed.resourceLogs ?? []) {
    for (const sl of rl.scopeLogs ?? []) {
      for (const r of sl.logRecords ?? []) out.push({ body: String(r.body?.stringValue ?? ''), traceId: r.traceId ?? '', attributes: attrs(r.attributes) });
    }
  }
}

/** `url` with a user and password in it, as an endpoint that carries its credential (the password percent-encoded where it must be). */
export function withCredentials(url: string, username: string, password: string): URL {
  const endpoint = new URL(url);
  endpoint.username = username;
  endpoint.password = password;
  return endpoint;
}
