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
  /** The catalogue's unit (OpenMetrics writes a base unit the name ends with as `# UNIT`). */
  readonly unit?: string;
  readonly samples: readonly Sample[];
}

/**
 * Renders metrics in the Prometheus text exposition format (version 0.0.4), the format
 * Prometheus, VictoriaMetrics, Grafana Agent and the OpenTelemetry collector's Prometheus
 * receiver scrape (openmetrics.ts writes OpenMetrics for those that ask for it).
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

/** One histogram family: its series with bucket counts (each bucket alone, +Inf last), sum and count. */
export interface HistogramMetric {
  readonly name: string;
  readonly help: string;
  readonly unit?: string;
  readonly series: readonly {
    readonly labels: Readonly<Record<string, string>>;
    readonly bounds: readonly number[];
    readonly counts: readonly number[];
    readonly sum: number;
    readonly count: number;
  }[];
}

/** Histograms in the same format: cumulative `_bucket{le=...}` lines, `_sum` and `_count`. */
export function renderHistograms(metrics: readonly HistogramMetric[]): string {
  const lines: string[] = [];
  for (const metric of metrics) {
    if (metric.series.length === 0) continue;
    const name = metricName(metric.name, 'histogram');
    lines.push(`# HELP ${name} ${metric.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`, `# TYPE ${name} histogram`);
    for (const s of metric.series) {
      bucketLines(lines, name, s, String);
      lines.push(`${name}_sum${labelText(s.labels)} ${formatValue(s.sum)}`, `${name}_count${labelText(s.labels)} ${s.count}`);
    }
  }
  return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
}

/** A histogram series' cumulative `_bucket` lines, `+Inf` last; `le` writes a bound as the format wants it. */
export function bucketLines(lines: string[], name: string, s: HistogramMetric['series'][number], le: (bound: number) => string): void {
  let cumulative = 0;
  s.bounds.forEach((bound, i) => {
    cumulative += s.counts[i] ?? 0;
    lines.push(`${name}_bucket${labelText({ ...s.labels, le: le(bound) })} ${cumulative}`);
  });
  lines.push(`${name}_bucket${labelText({ ...s.labels, le: '+Inf' })} ${s.count}`);
}

export function metricName(name: string, type: Metric['type'] | 'histogram'): string {
  const base = `ferry_${name.replace(/[^a-zA-Z0-9_]/g, '_')}`;
  return type === 'counter' && !base.endsWith('_total') ? `${base}_total` : base;
}

export function labelText(labels: Readonly<Record<string, string>> | undefined): string {
  if (labels === undefined) return '';
  const entries = Object.entries(labels);
  if (entries.length === 0) return '';
  return `{${entries.map(([k, v]) => `${k.replace(/[^a-zA-Z0-9_]/g, '_')}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`).join(',')}}`;
}

export function formatValue(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Number.POSITIVE_INFINITY) return '+Inf';
  if (value === Number.NEGATIVE_INFINITY) return '-Inf';
  return String(value);
}
