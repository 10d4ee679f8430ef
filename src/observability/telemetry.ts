import type { Logger } from 'pino';
import type { TelemetryExport } from '../config/telemetry.ts';
import type { MessageTracing } from '../core/tracing.ts';
import type { CounterRegistry } from './counters.ts';
import type { LogBridge } from './log-bridge.ts';
import type { Sample } from './prometheus.ts';

export interface TelemetryDeps {
  readonly logger: Logger;
  readonly counters: CounterRegistry;
  /** The gauges of /metrics, by catalogue name, read at each export. */
  readonly gauges: () => Readonly<Record<string, readonly Sample[]>>;
  readonly version: string;
  readonly logBridge?: LogBridge;
}

/** OpenTelemetry export while it runs. */
export interface Telemetry {
  /** Set while traces are exported. */
  readonly tracing?: MessageTracing;
  /** Exports what is pending and stops. */
  shutdown(): Promise<void>;
}

/**
 * Starts OpenTelemetry export when `settings` asks for any (see src/config/telemetry.ts). The
 * SDK and exporters are imported here, on demand: a gateway exporting nothing never loads them.
 */
export async function startTelemetry(settings: TelemetryExport | undefined, deps: TelemetryDeps): Promise<Telemetry | undefined> {
  if (settings === undefined) return undefined;
  const { startOtel } = await import('./otel.ts');
  const telemetry = startOtel(settings, deps);
  deps.logger.info(
    {
      traces: withoutSecrets(settings.traces?.url),
      sampleRatio: settings.traces?.sampleRatio,
      metrics: withoutSecrets(settings.metrics?.url),
      logs: withoutSecrets(settings.logs?.url),
      service: settings.resource['service.name'],
    },
    'exporting telemetry over OTLP/HTTP',
  );
  return telemetry;
}

/**
 * An export URL as the log shows it: a user name, password and query values (some receivers take
 * an API key there) are replaced by `***`, so that a credential written into the endpoint is not
 * logged (nor exported with the log line).
 */
export function withoutSecrets(url: string | undefined): string | undefined {
  if (url === undefined) return undefined;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return '(not a valid URL)';
  }
  if (parsed.username !== '') parsed.username = '***';
  if (parsed.password !== '') parsed.password = '***';
  for (const key of new Set(parsed.searchParams.keys())) parsed.searchParams.set(key, '***');
  return parsed.href.replaceAll('%2A%2A%2A', '***');
}
