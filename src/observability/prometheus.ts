/** One sample of a metric: its labels and value. */
export interface Sample {
  readonly labels?: Readonly<Record<string, string>>;
  readonly value: number;
}

/** A metric family in the Prometheus text format. */
export interface Metric {
  /** Name without the `ferry_` prefix; dots become underscores. Counters get `_total`. */
  readonly name: string;
  readonly type: 'counter' | 'gauge';
  readonly help: string;
  readonly samples: readonly Sample[];
}

/**
 * Renders metrics in the Prometheus text exposition format (version 0.0.4), the format
 * Prometheus, VictoriaMetrics, Grafana Agent and the OpenTelemetry collector's Prometheus
 * receiver scrape.
 */
export function renderPrometheus(metrics: readonly Metric[]): string {
  const lines: string[] = [];
  for (const metric of metrics) {
    if (metric.samples.length === 0) continue;
    const name = metricName(metric.name, metric.type);
    lines.push(`# HELP ${name} ${metric.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`, `# TYPE ${name} ${metric.type}`);
    for (const sample of metric.samples) lines.push(`${name}${labelText(sample.labels)} ${formatValue(sample.value)}`);
  }
  return `${lines.join('\n')}\n`;
}

export function metricName(name: string, type: Metric['type']): string {
  const base = `ferry_${name.replace(/[^a-zA-Z0-9_]/g, '_')}`;
  return type === 'counter' && !base.endsWith('_total') ? `${base}_total` : base;
}

function labelText(labels: Readonly<Record<string, string>> | undefined): string {
  if (labels === undefined) return '';
  const entries = Object.entries(labels);
  if (entries.length === 0) return '';
  return `{${entries.map(([k, v]) => `${k.replace(/[^a-zA-Z0-9_]/g, '_')}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`).join(',')}}`;
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Number.POSITIVE_INFINITY) return '+Inf';
  if (value === Number.NEGATIVE_INFINITY) return '-Inf';
  return String(value);
}
