import { type GaugeName, metricSpec } from './catalogue.ts';
import type { CounterRegistry } from './counters.ts';
import { type Metric, type Sample, renderPrometheus } from './prometheus.ts';

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
}

/**
 * /metrics: gauges of the gateway's state (buffer depth per bridge and sink, dead letters,
 * sockets, messages awaiting their acknowledgement), then every counter, in the Prometheus
 * text format, with HELP text from the catalogue.
 */
export function renderGatewayMetrics(status: MetricsStatus, counters: CounterRegistry, now = Date.now()): string {
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
  const gauges: Metric[] = Object.entries(samples).map(([name, values]) => ({ name, type: 'gauge', help: helpOf(name, 'gauge'), samples: values }));
  const counted: Metric[] = [...counters.families()].map(([name, values]) => ({ name, type: 'counter', help: helpOf(name, 'counter'), samples: values }));
  return renderPrometheus([...gauges, ...counted]);
}

function helpOf(name: string, type: Metric['type']): string {
  // A name missing from the catalogue fails the catalogue test; until then it still shows.
  // HELP is plain text: the catalogue's Markdown code quotes are left out.
  return (metricSpec(name, type)?.help ?? `Ferry ${type} ${name}.`).replace(/`/g, '');
}
