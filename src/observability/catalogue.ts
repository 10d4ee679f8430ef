import { adminMetrics } from './metrics/admin.ts';
import { bridgeMetrics } from './metrics/bridges.ts';
import { bufferMetrics } from './metrics/buffer.ts';
import { gaugeMetrics } from './metrics/gauges.ts';
import { hostMetrics } from './metrics/host.ts';
import { kafkaMetrics } from './metrics/kafka.ts';
import { latencyMetrics } from './metrics/latency.ts';
import { mqttMetrics } from './metrics/mqtt.ts';
import { postgresMetrics } from './metrics/postgres.ts';
import type { MetricSpec } from './metrics/spec.ts';
import { metricName } from './prometheus.ts';

export type { LabelSpec, MetricSpec } from './metrics/spec.ts';

/**
 * Every metric Ferry exposes, declared once (name, type, unit, labels, meaning): /metrics
 * takes its HELP text from here and docs/reference/metrics.md is made from it. A name counted
 * in src/ that is missing here fails test/unit/observability/catalogue.test.ts.
 */
export const catalogue = [
  ...gaugeMetrics,
  ...hostMetrics,
  ...mqttMetrics,
  ...bufferMetrics,
  ...bridgeMetrics,
  ...kafkaMetrics,
  ...postgresMetrics,
  ...latencyMetrics,
  ...adminMetrics,
] as const;

/** The catalogue in the groups the metrics reference shows. */
export const metricGroups: readonly { readonly title: string; readonly metrics: readonly MetricSpec[] }[] = [
  { title: 'Gateway state (gauges)', metrics: gaugeMetrics },
  { title: 'Host, process and event loop', metrics: hostMetrics },
  { title: 'MQTT: the embedded broker and external brokers', metrics: mqttMetrics },
  { title: 'Durable buffer', metrics: bufferMetrics },
  { title: 'Bridges, rate limits, handlers and reloads', metrics: bridgeMetrics },
  { title: 'Kafka and commands to devices', metrics: kafkaMetrics },
  { title: 'PostgreSQL', metrics: postgresMetrics },
  { title: 'Latency histograms and the eBPF collector', metrics: latencyMetrics },
  { title: 'Admin server', metrics: adminMetrics },
];

export type GaugeName = (typeof gaugeMetrics)[number]['name'];
export type HostGaugeName = Extract<(typeof hostMetrics)[number], { type: 'gauge' }>['name'];

// Keyed by the exposed name: a counter and a gauge may share a dotted name
// (`buffer.dead_letters`: dead-lettered so far, and kept now), not a Prometheus one.
const byExposedName = new Map((catalogue as readonly MetricSpec[]).map((spec) => [metricName(spec.name, spec.type), spec]));

/** The declaration of a metric, by its name as counted (dotted) and its type. */
export function metricSpec(name: string, type: MetricSpec['type']): MetricSpec | undefined {
  return byExposedName.get(metricName(name, type));
}
