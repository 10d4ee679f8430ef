import { hostname } from 'node:os';
import { z } from 'zod';
import type { Env } from './interpolate.ts';
import { ConfigError, type ConfigIssue } from './issues.ts';
import { lazySchema } from '../core/lazy-schema.ts';
import { MAX_TIMER_MESSAGE, MAX_TIMER_MS } from '../core/timer-limit.ts';

/** `telemetry:` in gateway.yaml: OpenTelemetry export over OTLP/HTTP, and the eBPF collector. */
export const telemetrySchema = lazySchema(() =>
  z
    .strictObject({
      endpoint: z
        .string()
        .superRefine((text, ctx) => {
          const problem = endpointProblem(text);
          if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
        })
        .optional()
        .meta({
          format: 'uri',
          description:
            'Base URL of an OTLP/HTTP receiver (an OpenTelemetry collector): traces go to `<endpoint>/v1/traces`, metrics to `/v1/metrics`, logs to `/v1/logs`, after its path (`http://c:4318/otlp` → `/otlp/v1/traces`) and before its query, which every request keeps. A user and password in it (`http://user:pass@c:4318`) are sent as HTTP Basic auth, not in the URL. Without it (and without OTEL_EXPORTER_OTLP_ENDPOINT) nothing is exported and the OpenTelemetry SDK is not loaded.',
          examples: ['http://127.0.0.1:4318'],
        }),
      headers: z
        .record(z.string(), z.string())
        .default({})
        .meta({
          description:
            'HTTP headers sent with every export (an API key); merged over OTEL_EXPORTER_OTLP_HEADERS. An `authorization` among them wins over a user and password in OTEL_EXPORTER_OTLP_ENDPOINT.',
          examples: [{ authorization: '${OTLP_TOKEN}' }],
        }),
      serviceName: z
        .string()
        .min(1)
        .optional()
        .meta({ description: 'The `service.name` resource attribute; OTEL_SERVICE_NAME, else `ferry`.', examples: ['ferry'] }),
      resourceAttributes: z
        .record(z.string(), z.string())
        .default({})
        .meta({
          description: 'More resource attributes, merged over OTEL_RESOURCE_ATTRIBUTES. `service.instance.id` and `ferry.gateway` are the gateway name, `host.name` the host.',
          examples: [{ 'deployment.environment': 'site-7' }],
        }),
      traces: z
        .strictObject({
          enabled: z
            .boolean()
            .default(true)
            .meta({ description: 'Export a span per sampled message (ingress to buffer commit, then each sink write).', examples: [true] }),
          sampleRatio: z
            .number()
            .min(0)
            .max(1)
            .optional()
            .meta({
              description:
                'Share of messages without a sampled parent that start a trace (parent-based: a message carrying a W3C traceparent follows its sampled flag); OTEL_TRACES_SAMPLER_ARG, else 0.1.',
              examples: [0.01],
            }),
        })
        .prefault({})
        .meta({ description: 'Traces.' }),
      metrics: z
        .strictObject({
          enabled: z
            .boolean()
            .default(true)
            .meta({ description: 'Export the metrics of the catalogue (as on /metrics) over OTLP.', examples: [true] }),
          intervalMs: z
            .int()
            .min(1000)
            .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
            .optional()
            .meta({ description: 'How often metrics are exported, in milliseconds; OTEL_METRIC_EXPORT_INTERVAL, else 15000.', examples: [60000] }),
        })
        .prefault({})
        .meta({ description: 'Metrics.' }),
      logs: z
        .strictObject({
          enabled: z
            .boolean()
            .default(false)
            .meta({ description: 'Export log lines over OTLP too (they are still written to standard output).', examples: [true] }),
        })
        .prefault({})
        .meta({ description: 'Logs.' }),
      ebpf: z
        .enum(['auto', 'off'])
        .default('auto')
        .meta({
          description:
            'The eBPF collector (fsync latency, on-CPU samples) through bpftrace: `auto` runs it when bpftrace is installed and usable (root), and logs once why not otherwise; `off` never. Independent of `endpoint`: its metrics show on /metrics.',
          examples: ['off'],
        }),
    })
    .superRefine((telemetry, ctx) => {
      // An endpoint that is not a URL has its own issue: zod runs this check all the same.
      if (telemetry.endpoint === undefined || endpointProblem(telemetry.endpoint) !== undefined || !hasAuthorization(telemetry.headers)) return;
      const url = new URL(telemetry.endpoint);
      if (url.username === '' && url.password === '') return;
      ctx.addIssue({
        code: 'custom',
        path: ['endpoint'],
        message: 'the endpoint carries a user and password (sent as HTTP Basic auth) and telemetry.headers an Authorization too: keep one of them',
      });
    })
    .prefault({})
    .meta({ description: 'OpenTelemetry export (traces, metrics, logs over OTLP/HTTP) and the eBPF collector. See docs/observability.md.' }),
);

export type TelemetrySection = z.output<ReturnType<typeof telemetrySchema>>;

/** One OTLP/HTTP destination. */
export interface OtlpTarget {
  readonly url: string;
  readonly headers: Readonly<Record<string, string>>;
}

/** What to export, with the environment's OTEL_* variables applied. */
export interface TelemetryExport {
  readonly resource: Readonly<Record<string, string>>;
  readonly traces?: OtlpTarget & { readonly sampleRatio: number };
  readonly metrics?: OtlpTarget & { readonly intervalMs: number };
  readonly logs?: OtlpTarget;
}

/**
 * The export settings from `telemetry:` and the standard variables (OTEL_EXPORTER_OTLP_ENDPOINT,
 * OTEL_EXPORTER_OTLP_{TRACES,METRICS,LOGS}_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS,
 * OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER_ARG, OTEL_METRIC_EXPORT_INTERVAL,
 * OTEL_SDK_DISABLED);
 * gateway.yaml wins where both say something. Undefined when nothing is to be exported. Throws
 * a ConfigError naming each endpoint variable it would use that is not an http(s) URL.
 */
export function resolveTelemetry(section: TelemetrySection, gateway: string, env: Env): TelemetryExport | undefined {
  if (env['OTEL_SDK_DISABLED'] === 'true') return undefined;
  const problems: ConfigIssue[] = [];
  /**
   * An endpoint variable the export uses, checked as `telemetry.endpoint` is: a malformed one
   * failed in the exporter's constructor with its own words, or (`ftp://c`, `c:4318`, a scheme
   * that is not http) was taken and every export failed later. Empty is unset, as the
   * OpenTelemetry specification has it for every OTEL_* variable.
   */
  const endpointVariable = (name: string): string | undefined => {
    const text = env[name];
    if (text === undefined || text === '') return undefined;
    const problem = endpointProblem(text);
    if (problem === undefined) return text;
    if (!problems.some((p) => p.path === name)) problems.push({ file: 'environment', line: 0, column: 0, path: name, message: problem });
    return undefined;
  };
  const headers = { ...keyValues(env['OTEL_EXPORTER_OTLP_HEADERS']), ...section.headers };
  const target = (signal: Signal): OtlpTarget | undefined => {
    const own = section.endpoint === undefined ? endpointVariable(`OTEL_EXPORTER_OTLP_${signal.toUpperCase()}_ENDPOINT`) : undefined;
    const base = own === undefined ? (section.endpoint ?? endpointVariable('OTEL_EXPORTER_OTLP_ENDPOINT')) : undefined;
    const url = own ?? (base === undefined ? undefined : signalUrl(base, signal));
    return url === undefined ? undefined : withBasicAuth(url, headers);
  };
  const traces = section.traces.enabled ? target('traces') : undefined;
  const metrics = section.metrics.enabled ? target('metrics') : undefined;
  const logs = section.logs.enabled ? target('logs') : undefined;
  if (problems.length > 0) throw new ConfigError(problems);
  if (traces === undefined && metrics === undefined && logs === undefined) return undefined;
  const envRatio = Number(env['OTEL_TRACES_SAMPLER_ARG']);
  const sampleRatio = section.traces.sampleRatio ?? (env['OTEL_TRACES_SAMPLER_ARG'] !== undefined && envRatio >= 0 && envRatio <= 1 ? envRatio : 0.1);
  const envInterval = Number(env['OTEL_METRIC_EXPORT_INTERVAL']);
  const intervalMs = section.metrics.intervalMs ?? (Number.isInteger(envInterval) && envInterval > 0 ? envInterval : 15_000);
  const resource = {
    ...keyValues(env['OTEL_RESOURCE_ATTRIBUTES']),
    'service.name': section.serviceName ?? env['OTEL_SERVICE_NAME'] ?? 'ferry',
    'service.instance.id': gateway,
    'ferry.gateway': gateway,
    'host.name': hostname(),
    ...section.resourceAttributes,
  };
  return {
    resource,
    ...(traces === undefined ? {} : { traces: { ...traces, sampleRatio } }),
    ...(metrics === undefined ? {} : { metrics: { ...metrics, intervalMs } }),
    ...(logs === undefined ? {} : { logs }),
  };
}

type Signal = 'traces' | 'metrics' | 'logs';

/**
 * A signal's URL under the base endpoint: `v1/<signal>` joined to its path (after a prefix such
 * as `/otlp`, one slash between), its query kept at the end (`http://c:4318/?api_key=k` →
 * `http://c:4318/v1/logs?api_key=k`; a plain append put the path inside the query).
 */
function signalUrl(base: string, signal: Signal): string {
  // A URL: `telemetry.endpoint` and the variables are checked (endpointProblem).
  const url = new URL(base);
  url.pathname = `${url.pathname.replace(/\/+$/, '')}/v1/${signal}`;
  url.hash = '';
  return url.href;
}

/**
 * A user and password in an export URL, sent as HTTP Basic auth: the URL handed to the exporter
 * carries none (OTLP exporters take no credentials in the URL; that Node's http module sends
 * them was an accident of the exporter's transport, and fetch refuses such a URL). An
 * `Authorization` in the headers wins: gateway.yaml refuses both at once in `telemetry:`.
 */
function withBasicAuth(url: string, headers: Readonly<Record<string, string>>): OtlpTarget {
  const parsed = new URL(url);
  if (parsed.username === '' && parsed.password === '') return { url, headers };
  const basic = `Basic ${Buffer.from(`${decodedPart(parsed.username)}:${decodedPart(parsed.password)}`).toString('base64')}`;
  parsed.username = '';
  parsed.password = '';
  return { url: parsed.href, headers: hasAuthorization(headers) ? headers : { ...headers, authorization: basic } };
}

/** What an OTLP/HTTP endpoint is, said by the check of `telemetry.endpoint` and of the OTEL_EXPORTER_OTLP_*ENDPOINT variables alike. */
const ENDPOINT_EXPECTED = 'expected the http:// or https:// URL of an OTLP/HTTP receiver, such as http://127.0.0.1:4318';

/** Why `text` cannot be an OTLP/HTTP endpoint, or undefined when it can. */
function endpointProblem(text: string): string | undefined {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return `not a URL; ${ENDPOINT_EXPECTED}`;
  }
  if (url.protocol === 'http:' || url.protocol === 'https:') return undefined;
  // `localhost:4318` is a URL of the scheme `localhost:`: a host and port written without one.
  if (!text.includes('//')) return `no http:// or https:// before the host; ${ENDPOINT_EXPECTED}`;
  return `the scheme ${url.protocol} is not http: or https:; ${ENDPOINT_EXPECTED}`;
}

function hasAuthorization(headers: Readonly<Record<string, string>>): boolean {
  return Object.keys(headers).some((name) => name.toLowerCase() === 'authorization');
}

/** A percent-encoded part of a URL, decoded; as written when its escapes are malformed. */
function decodedPart(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** `a=1,b=2` as the OTEL_* variables write lists (values percent-encoded). */
function keyValues(text: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of (text ?? '').split(',')) {
    const at = pair.indexOf('=');
    if (at <= 0) continue;
    try {
      out[decodeURIComponent(pair.slice(0, at).trim())] = decodeURIComponent(pair.slice(at + 1).trim());
    } catch {
      // A malformed escape: the pair is left out, as the OpenTelemetry SDKs do.
    }
  }
  return out;
}
