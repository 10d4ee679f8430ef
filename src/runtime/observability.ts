import type { Logger } from 'pino';
import type { GatewayConfig } from '../config/load.ts';
import type { MessageTracing } from '../core/tracing.ts';
import type { CounterRegistry } from '../observability/counters.ts';
import { EbpfCollector } from '../observability/ebpf.ts';
import { type MetricsStatus, gaugeSamples } from '../observability/gateway-metrics.ts';
import type { LogBridge } from '../observability/log-bridge.ts';
import { startTelemetry } from '../observability/telemetry.ts';

/** The gateway's telemetry export and eBPF collector while it runs. */
export interface Observability {
  readonly tracing: MessageTracing | undefined;
  stop(): Promise<void>;
}

/** Starts OpenTelemetry export (when `telemetry:` or OTEL_* configure it) and the eBPF collector (unless `telemetry.ebpf: off`). */
export async function startObservability(
  config: GatewayConfig,
  deps: { readonly logger: Logger; readonly counters: CounterRegistry; readonly status: () => MetricsStatus; readonly version: string; readonly logBridge?: LogBridge },
): Promise<Observability> {
  const logger = deps.logger.child({ component: 'telemetry' });
  const telemetry = await startTelemetry(config.telemetryExport, {
    logger,
    counters: deps.counters,
    gauges: () => gaugeSamples(deps.status()),
    version: deps.version,
    ...(deps.logBridge === undefined ? {} : { logBridge: deps.logBridge }),
  });
  const ebpf = config.telemetry.ebpf === 'off' ? undefined : EbpfCollector.start({ logger: deps.logger.child({ component: 'ebpf' }), counters: deps.counters });
  return {
    tracing: telemetry?.tracing,
    stop: async () => {
      ebpf?.stop();
      await telemetry?.shutdown();
    },
  };
}
