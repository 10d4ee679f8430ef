import { metricGroups } from '../../src/observability/catalogue.ts';
import type { LabelSpec, MetricSpec } from '../../src/observability/catalogue.ts';
import { metricName } from '../../src/observability/prometheus.ts';
import { generatedHeader } from './header.ts';

/** docs/reference/metrics.md: every metric of the catalogue with its type, unit, labels and meaning. */
export function metricsPage(): string {
  const sections = metricGroups.map(({ title, metrics }) =>
    [`## ${title}`, '', '| metric | type | unit | labels | meaning |', '|---|---|---|---|---|', ...metrics.map(row)].join('\n'),
  );
  return [
    generatedHeader('the metrics catalogue (src/observability/metrics/)'),
    '# Metrics',
    '',
    'Every metric Ferry keeps. `GET /metrics` on the admin server serves them in the Prometheus text format (version 0.0.4), or OpenMetrics 1.0.0 when the `Accept` header of the request asks for it: counters as `ferry_<name>_total`, gauges as `ferry_<name>`, histograms as `ferry_<name>_bucket{le=...}`, `_sum` and `_count`, with the dots of a name as underscores. With OpenTelemetry export on, the same metrics go over OTLP as `ferry.<name>` (see [Observability](../observability.md)). `GET /api/status` lists the counters under `counters`, keyed by name and labels (`mqtt.connections.refused{reason=acl}`). A counter shows once it has counted something. See [Operations](../operations.md#metrics) for scraping and alerting.',
    '',
    ...sections.flatMap((s) => [s, '']),
  ].join('\n');
}

function row(spec: MetricSpec): string {
  const exposed = `\`${metricName(spec.name, spec.type)}\``;
  const name = spec.type === 'counter' ? `${exposed}<br>\`${spec.name}\`` : exposed;
  const labels = Object.entries(spec.labels)
    .map(([label, about]) => labelText(label, about))
    .join('<br>');
  return `| ${name} | ${spec.type} | ${spec.unit} | ${labels} | ${spec.help.replace(/\|/g, '\\|')} |`;
}

function labelText(label: string, about: LabelSpec): string {
  const values = about.values === undefined ? '' : `: ${about.values.map((v) => `\`${v}\``).join(', ')}`;
  return `\`${label}\`, ${about.meaning}${values}`;
}
