import { type GaugeName, type HostGaugeName, metricSpec } from './catalogue.ts';
import type { CounterRegistry } from './counters.ts';
import type { EventLoopWindow } from './event-loop.ts';
import type { HostReading } from './host-metrics.ts';
import { type MetricsFormat, renderOpenMetrics } from './openmetrics.ts';
import { type HistogramMetric, type Metric, type Sample, renderHistograms, renderPrometheus } from './prometheus.ts';

/** The part of the gateway's status its metrics show; the runtime's `GatewayStatus` fits. */
export interface MetricsStatus {
  readonly state: string;
  readonly uptimeSeconds: number;
  /** `clients` is set for broker listeners (open sockets), absent for the admin server. */
  readonly listeners: readonly { readonly protocol: string; readonly clients?: number }[];
  readonly inFlight: number;
  /** TypeScript bridges carry `handler`. */
  readonly bridges: readonly { readonly name: string; readonly handler?: { readonly held: number; readonly oldestHeldAgeMs: number } }[];
  readonly buffer: {
    readonly state: string;
    readonly held: number;
    readonly bridges: readonly {
      readonly bridge: string;
      readonly messages: number;
      readonly bytes: number;
      readonly deadLetters: number;
      readonly sinks: readonly { readonly sink: string; readonly pending: number; readonly oldestPendingAt: number | null }[];
    }[];
  };
  /** The latest host reading and event-loop window (Vitals); absent or null before the first one. */
  readonly host?: HostReading | null;
  readonly eventLoop?: EventLoopWindow | null;
}

/**
 * /metrics: gauges of the gateway's state (buffer depth per bridge and sink, dead letters,
 * sockets, messages awaiting their acknowledgement), of the host and the event loop, then every counter, in the Prometheus
 * text format (or OpenMetrics, for a scraper that asks for it), with HELP text and units from the catalogue.
 */
export function renderGatewayMetrics(status: MetricsStatus, counters: CounterRegistry, now = Date.now(), format: MetricsFormat = 'prometheus'): string {
  const all = gaugeSamples(status, now);
  const gauges: Metric[] = Object.entries(all).map(([name, values]) => ({ name, type: 'gauge', ...describe(name, 'gauge'), samples: values }));
  const counted: Metric[] = [...counters.families()].map(([name, values]) => ({ name, type: 'counter', ...describe(name, 'counter'), samples: values }));
  const histograms: HistogramMetric[] = [...counters.histograms.families()].map(([name, series]) => ({ name, ...describe(name, 'histogram'), series }));
  if (format === 'openmetrics') return renderOpenMetrics([...gauges, ...counted], histograms);
  return renderPrometheus([...gauges, ...counted]) + renderHistograms(histograms);
}

/** Every gauge of the catalogue with its samples now (by catalogue name), for /metrics and OpenTelemetry. */
export function gaugeSamples(status: MetricsStatus, now = Date.now()): Record<GaugeName | HostGaugeName, Sample[]> {
  const buffered = status.buffer.bridges;
  const handlers = status.bridges.flatMap((b) => (b.handler === undefined ? [] : [{ name: b.name, handler: b.handler }]));
  const perSink = (value: (sink: MetricsStatus['buffer']['bridges'][number]['sinks'][number]) => number): Sample[] =>
    buffered.flatMap((b) => b.sinks.map((s) => ({ labels: { bridge: b.bridge, sink: s.sink }, value: value(s) })));
  const samples: Record<GaugeName, Sample[]> = {
    up: [{ value: status.state === 'running' ? 1 : 0 }],
    uptime_seconds: [{ value: status.uptimeSeconds }],
    'mqtt.clients': status.listeners.flatMap((l) => (l.clients === undefined ? [] : [{ labels: { listener: l.protocol }, value: l.clients }])),
    'mqtt.in_flight': [{ value: status.inFlight }],
    'buffer.held': [{ value: status.buffer.held }],
    'buffer.state': [{ labels: { state: status.buffer.state }, value: 1 }],
    'buffer.messages': buffered.map((b) => ({ labels: { bridge: b.bridge }, value: b.messages })),
    'buffer.bytes': buffered.map((b) => ({ labels: { bridge: b.bridge }, value: b.bytes })),
    'buffer.pending': perSink((s) => s.pending),
    'buffer.oldest_pending_age_seconds': perSink((s) => (s.oldestPendingAt === null ? 0 : Math.max(0, (now - s.oldestPendingAt) / 1000))),
    'buffer.dead_letters': buffered.map((b) => ({ labels: { bridge: b.bridge }, value: b.deadLetters })),
    'handler.held': handlers.map((b) => ({ labels: { bridge: b.name }, value: b.handler.held })),
    'handler.held_oldest_age_seconds': handlers.map((b) => ({ labels: { bridge: b.name }, value: b.handler.oldestHeldAgeMs / 1000 })),
  };
  return { ...samples, ...hostSamples(status.host ?? null, status.eventLoop ?? null) };
}

/** The host and event-loop gauges; a figure the platform does not give has no sample. */
function hostSamples(host: HostReading | null, loop: EventLoopWindow | null): Record<HostGaugeName, Sample[]> {
  const one = (value: number | null | undefined): Sample[] => (value === null || value === undefined ? [] : [{ value }]);
  const seconds = (ms: number | undefined) => one(ms === undefined ? undefined : ms / 1000);
  const interfaces = host?.network?.interfaces ?? [];
  return {
    'host.cpu.utilisation': one(host?.hostCpu),
    'process.cpu.utilisation': one(host?.processCpu),
    'host.memory.total_bytes': one(host?.memory.totalBytes),
    'host.memory.available_bytes': one(host?.memory.availableBytes),
    'process.memory.rss_bytes': one(host?.memory.processRssBytes),
    'process.memory.heap_used_bytes': one(host?.memory.processHeapUsedBytes),
    'host.disk.free_bytes': one(host?.disk?.freeBytes),
    'host.disk.total_bytes': one(host?.disk?.totalBytes),
    'host.network.received_bytes': interfaces.map((i) => ({ labels: { interface: i.name }, value: i.receivedBytes })),
    'host.network.sent_bytes': interfaces.map((i) => ({ labels: { interface: i.name }, value: i.sentBytes })),
    'eventloop.delay.p50_seconds': seconds(loop?.delayP50Ms),
    'eventloop.delay.p99_seconds': seconds(loop?.delayP99Ms),
    'eventloop.delay.max_seconds': seconds(loop?.delayMaxMs),
    'eventloop.utilisation': one(loop?.utilisation),
  };
}

function describe(name: string, type: Metric['type'] | 'histogram'): { help: string; unit?: string } {
  // A name missing from the catalogue fails the catalogue test; until then it still shows.
  // HELP is plain text: the catalogue's Markdown code quotes are left out.
  const spec = metricSpec(name, type);
  const help = (spec?.help ?? `Ferry ${type} ${name}.`).replace(/`/g, '');
  return spec === undefined ? { help } : { help, unit: spec.unit };
}
