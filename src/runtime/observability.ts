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
  /**
   * Starts the eBPF collector (unless `telemetry.ebpf: off`): once the gateway is ready, since
   * spawning bpftrace and its compiling of the probes cost the start about 50 ms on 2 cores.
   */
  startCollector(): void;
  stop(): Promise<void>;
}

/** Starts OpenTelemetry export (when `telemetry:` or OTEL_* configure it); the eBPF collector is started by `startCollector`. */
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
  let ebpf: EbpfCollector | undefined;
  let stopped = false;
  return {
    tracing: telemetry?.tracing,
    startCollector: () => {
      if (stopped || ebpf !== undefined || config.telemetry.ebpf === 'off') return;
      ebpf = EbpfCollector.start({ logger: deps.logger.child({ component: 'ebpf' }), counters: deps.counters });
    },
    stop: async () => {
      stopped = true;
      ebpf?.stop();
      await telemetry?.shutdown();
    },
  };
}
