import { type HistogramMetric, type Metric, bucketLines, formatValue, labelText, metricName } from './prometheus.ts';

/** The exposition formats /metrics serves. */
export type MetricsFormat = 'prometheus' | 'openmetrics';

export const CONTENT_TYPES: Readonly<Record<MetricsFormat, string>> = {
  prometheus: 'text/plain; version=0.0.4; charset=utf-8',
  openmetrics: 'application/openmetrics-text; version=1.0.0; charset=utf-8',
};

/**
 * The format an Accept header asks for: OpenMetrics 1.0.0 when it takes
 * `application/openmetrics-text` (version 1.0.0 or none) with a higher quality than the text
 * format (`text/plain`, else `*`/`*`), as Prometheus and the OpenTelemetry collector's
 * Prometheus receiver ask; else the Prometheus text format 0.0.4, also without any header.
 */
export function negotiateMetricsFormat(accept: string | undefined): MetricsFormat {
  if (accept === undefined) return 'prometheus';
  let openmetrics = 0;
  let text = 0;
  let any = 0;
  for (const range of accept.split(',')) {
    const [type = '', ...parameters] = range.split(';').map((part) => part.trim().toLowerCase());
    const values = new Map(parameters.map((p) => [p.slice(0, p.indexOf('=')).trim(), p.slice(p.indexOf('=') + 1).trim()] as const));
    const quality = values.has('q') ? Number(values.get('q')) : 1;
    if (!(quality > 0)) continue;
    const version = values.get('version');
    if (type === 'application/openmetrics-text' && (version === undefined || version === '1.0.0')) openmetrics = Math.max(openmetrics, quality);
    else if (type === 'text/plain') text = Math.max(text, quality);
    else if (type === '*/*') any = Math.max(any, quality);
  }
  return openmetrics > (text > 0 ? text : any) ? 'openmetrics' : 'prometheus';
}

/** Units OpenMetrics names in a `# UNIT` line: base units, when the name ends with them (as the spec requires). */
const UNITS = new Set(['seconds', 'bytes', 'ratio']);

/**
 * The same metrics in the OpenMetrics 1.0 text format: a counter's family is its name without
 * `_total` and its sample has it; HELP, TYPE and (for a base unit the name ends with) UNIT before
 * each family; `le` in canonical form (`1.0`); `# EOF` at the end. Series names are those of
 * the 0.0.4 format, so a scrape in either stores the same series.
 *
 * A counter whose family name is also a gauge's (`buffer.dead_letters`: dead-lettered so far,
 * and kept now) would be two families of one name, which OpenMetrics forbids: it goes out as
 * type `unknown` named with `_total`, its series unchanged.
 */
export function renderOpenMetrics(metrics: readonly Metric[], histograms: readonly HistogramMetric[]): string {
  const gauges = new Set(metrics.filter((m) => m.type === 'gauge' && m.samples.length > 0).map((m) => metricName(m.name, 'gauge')));
  const lines: string[] = [];
  for (const metric of metrics) {
    if (metric.samples.length === 0) continue;
    const sample = metricName(metric.name, metric.type);
    const counter = metric.type === 'counter' ? sample.slice(0, -'_total'.length) : undefined;
    const clash = counter !== undefined && gauges.has(counter);
    const family = counter === undefined || clash ? sample : counter;
    head(lines, family, clash ? 'unknown' : metric.type, metric.help, metric.unit);
    for (const s of metric.samples) lines.push(`${sample}${labelText(s.labels)} ${formatValue(s.value)}`);
  }
  for (const metric of histograms) {
    if (metric.series.length === 0) continue;
    const name = metricName(metric.name, 'histogram');
    head(lines, name, 'histogram', metric.help, metric.unit);
    for (const s of metric.series) {
      bucketLines(lines, name, s, canonical);
      lines.push(`${name}_count${labelText(s.labels)} ${s.count}`, `${name}_sum${labelText(s.labels)} ${formatValue(s.sum)}`);
    }
  }
  lines.push('# EOF');
  return `${lines.join('\n')}\n`;
}

function head(lines: string[], family: string, type: string, help: string, unit: string | undefined): void {
  lines.push(`# HELP ${family} ${help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')}`, `# TYPE ${family} ${type}`);
  if (unit !== undefined && UNITS.has(unit) && family.endsWith(`_${unit}`)) lines.push(`# UNIT ${family} ${unit}`);
}

/**
 * A number as OpenMetrics' canonical form writes it (Go's shortest `%g`, with `.0` on a whole
 * number: `1.0`, `0.005`, `2e-06`), as Prometheus stores `le` values: the same bucket has the
 * same label whichever exposition it was scraped from.
 */
export function canonical(value: number): string {
  if (Number.isNaN(value) || !Number.isFinite(value)) return formatValue(value);
  if (value === 0) return '0.0';
  const [mantissa = '', power = '0'] = value.toExponential().split('e');
  const exponent = Number(power);
  if (exponent < -4 || exponent >= 6) {
    return `${mantissa}e${exponent < 0 ? '-' : '+'}${String(Math.abs(exponent)).padStart(2, '0')}`;
  }
  const fixed = String(value);
  return fixed.includes('.') ? fixed : `${fixed}.0`;
}
