// Loaded by telemetry.ts only when something is exported: the OpenTelemetry SDK and its
// exporters cost startup time and memory that a gateway exporting nothing should not pay.
import { type Attributes, type HrTime, type Observable, ROOT_CONTEXT, TraceFlags, ValueType, trace } from '@opentelemetry/api';
import { OTLPLogExporter } from '@opentelemetry/exporter-logs-otlp-http';
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchLogRecordProcessor, LoggerProvider } from '@opentelemetry/sdk-logs';
import { AggregationTemporality, DataPointType, type HistogramMetricData, type MetricProducer, MeterProvider, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics';
import type { Resource } from '@opentelemetry/resources';
import type { TelemetryExport } from '../config/telemetry.ts';
import { catalogue } from './catalogue.ts';
import type { LogBridge } from './log-bridge.ts';
import { messageTracing } from './message-tracing.ts';
import type { MetricSpec } from './metrics/spec.ts';
import type { Sample } from './prometheus.ts';
import { SpanExport } from './span-export.ts';
import type { Telemetry, TelemetryDeps } from './telemetry.ts';

export function startOtel(settings: TelemetryExport, deps: TelemetryDeps): Telemetry {
  const attributes = { ...settings.resource, 'service.version': deps.version };
  const resource = resourceFromAttributes(attributes);
  const stops: (() => Promise<void>)[] = [];

  let tracing: Telemetry['tracing'];
  if (settings.traces !== undefined) {
    // The caller's logger names the component already (`telemetry`): a second `component` would
    // be a duplicate key in each JSON line, which log shippers read differently.
    const logger = deps.logger.child({ signal: 'traces' });
    const spans = new SpanExport(settings.traces, attributes, deps.version, logger);
    tracing = messageTracing(spans, settings.traces.sampleRatio, logger);
    stops.push(() => spans.shutdown());
  }

  if (settings.metrics !== undefined) {
    const exporter = new OTLPMetricExporter({ url: settings.metrics.url, headers: { ...settings.metrics.headers } });
    const reader = new PeriodicExportingMetricReader({
      exporter,
      exportIntervalMillis: settings.metrics.intervalMs,
      metricProducers: [histogramProducer(resource, deps)],
    });
    const provider = new MeterProvider({ resource, readers: [reader] });
    bridgeCatalogue(provider, deps);
    stops.push(() => provider.shutdown());
  }

  if (settings.logs !== undefined && deps.logBridge !== undefined) {
    const exporter = new OTLPLogExporter({ url: settings.logs.url, headers: { ...settings.logs.headers } });
    const provider = new LoggerProvider({ resource, processors: [new BatchLogRecordProcessor({ exporter })] });
    exportLogs(provider, deps.logBridge);
    stops.push(async () => {
      if (deps.logBridge !== undefined) deps.logBridge.line = undefined;
      await provider.shutdown();
    });
  }

  return {
    ...(tracing === undefined ? {} : { tracing }),
    shutdown: async () => {
      for (const stop of stops.reverse()) await stop().catch((error: unknown) => deps.logger.warn({ err: error }, 'telemetry: flushing an exporter failed'));
    },
  };
}

const NONE = {};

/** The metrics catalogue as OpenTelemetry instruments, named `ferry.<name>`. */
function bridgeCatalogue(provider: MeterProvider, deps: TelemetryDeps): void {
  const meter = provider.getMeter('ferry', deps.version);
  const observables = new Map<string, Observable>();
  for (const spec of catalogue as readonly MetricSpec[]) {
    const options = { description: describe(spec), unit: unitOf(spec.unit) };
    const name = `ferry.${spec.name}`;
    if (spec.type === 'histogram') continue;
    if (spec.type === 'counter') {
      observables.set(`counter ${spec.name}`, meter.createObservableCounter(name, options));
    } else if (!observables.has(`gauge ${spec.name}`)) {
      // A gauge and a counter may share a dotted name (buffer.dead_letters): the gauge gets a suffix.
      const taken = (catalogue as readonly MetricSpec[]).some((s) => s.type === 'counter' && s.name === spec.name);
      observables.set(`gauge ${spec.name}`, meter.createObservableGauge(taken ? `${name}.current` : name, options));
    }
  }
  meter.addBatchObservableCallback(
    (result) => {
      for (const [name, samples] of Object.entries(deps.gauges())) {
        const instrument = observables.get(`gauge ${name}`);
        if (instrument !== undefined) for (const sample of samples) result.observe(instrument, sample.value, (sample.labels ?? NONE) as Attributes);
      }
      for (const [name, values] of deps.counters.families()) {
        const instrument = observables.get(`counter ${name}`);
        if (instrument !== undefined) for (const { labels, value } of values) result.observe(instrument, value, labels as Attributes);
      }
    },
    [...observables.values()],
  );
}

const describe = (spec: MetricSpec) => spec.help.replace(/`/g, '');
const hrTime = (ms: number): HrTime => [Math.floor(ms / 1000), Math.round((ms % 1000) * 1e6)];

/**
 * The catalogue's histograms as OpenTelemetry histogram data, read from the in-process ones at
 * each export: a histogram instrument would cost an attribute lookup per recorded value (one
 * per message for the message age) while export is on.
 */
function histogramProducer(resource: Resource, deps: TelemetryDeps): MetricProducer {
  const specs = new Map((catalogue as readonly MetricSpec[]).filter((s) => s.type === 'histogram').map((s) => [s.name, s]));
  return {
    collect: async () => {
      const now = hrTime(Date.now());
      const metrics: HistogramMetricData[] = [];
      for (const [name, series] of deps.counters.histograms.families()) {
        const spec = specs.get(name);
        if (spec === undefined) continue;
        metrics.push({
          descriptor: { name: `ferry.${name}`, description: describe(spec), unit: unitOf(spec.unit), valueType: ValueType.DOUBLE },
          aggregationTemporality: AggregationTemporality.CUMULATIVE,
          dataPointType: DataPointType.HISTOGRAM,
          dataPoints: series.map((s) => ({
            attributes: s.labels as Attributes,
            startTime: hrTime(s.since),
            endTime: now,
            value: { buckets: { boundaries: [...s.bounds], counts: [...s.counts] }, sum: s.sum, count: s.count },
          })),
        });
      }
      return { resourceMetrics: { resource, scopeMetrics: [{ scope: { name: 'ferry', version: deps.version }, metrics }] }, errors: [] };
    },
  };
}

/** UCUM units as OpenTelemetry's semantic conventions write them; counts in braces. */
function unitOf(unit: string): string {
  if (unit === 'seconds') return 's';
  if (unit === 'bytes') return 'By';
  if (unit === 'ratio' || unit === '1') return '1';
  return `{${unit}}`;
}

const SEVERITY: Record<number, { text: string; number: number }> = {
  10: { text: 'TRACE', number: 1 },
  20: { text: 'DEBUG', number: 5 },
  30: { text: 'INFO', number: 9 },
  40: { text: 'WARN', number: 13 },
  50: { text: 'ERROR', number: 17 },
  60: { text: 'FATAL', number: 21 },
};

/** Each pino line also as an OpenTelemetry log record, with the line's other fields as attributes. */
function exportLogs(provider: LoggerProvider, bridge: LogBridge): void {
  const logger = provider.getLogger('ferry');
  bridge.line = (text) => {
    let fields: Record<string, unknown>;
    try {
      fields = JSON.parse(text) as Record<string, unknown>;
    } catch {
      return;
    }
    const { msg, level, time, trace_id: traceId, span_id: spanId, ...rest } = fields;
    const severity = SEVERITY[typeof level === 'number' ? level : 30] ?? { text: 'INFO', number: 9 };
    const attributes: Attributes = {};
    for (const [key, value] of Object.entries(rest)) attributes[key] = typeof value === 'object' && value !== null ? JSON.stringify(value) : (value as string | number | boolean);
    logger.emit({
      body: typeof msg === 'string' ? msg : '',
      severityText: severity.text,
      severityNumber: severity.number,
      ...(typeof time === 'number' ? { timestamp: time } : {}),
      attributes,
      // A line logged inside a span names it (trace_id, span_id): the record belongs to that span.
      ...(typeof traceId === 'string' && typeof spanId === 'string' ? { context: trace.setSpanContext(ROOT_CONTEXT, { traceId, spanId, traceFlags: TraceFlags.SAMPLED }) } : {}),
    });
  };
}

export type { Sample };
