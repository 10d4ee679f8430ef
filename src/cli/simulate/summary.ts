import type { FleetResult } from './fleet.ts';

export interface Summary {
  readonly profile: string;
  readonly url: string;
  readonly qos: 0 | 1 | 2;
  readonly devices: number;
  readonly connected: number;
  readonly sent: number;
  /** QoS 0: written to the socket, as nothing else comes back. */
  readonly acked: number;
  readonly failed: number;
  readonly durationMs: number;
  /** Acknowledged messages per second. */
  readonly rate: number;
  /** Publish to PUBACK (PUBCOMP for QoS 2); null for QoS 0. */
  readonly latencyMs: { p50: number; p90: number; p99: number; max: number } | null;
  readonly connectionErrors: number;
  readonly errors: readonly string[];
}

const round = (n: number, digits: number) => Math.round(n * 10 ** digits) / 10 ** digits;

export function summarize(profile: string, url: string, qos: 0 | 1 | 2, result: FleetResult): Summary {
  const { latency } = result;
  const at = (p: number) => round(latency.percentile(p) ?? 0, 2);
  return {
    profile,
    url,
    qos,
    devices: result.devices,
    connected: result.connected,
    sent: result.sent,
    acked: result.acked,
    failed: result.failed,
    durationMs: Math.round(result.elapsedMs),
    rate: result.elapsedMs > 0 ? Math.round((result.acked * 1000) / result.elapsedMs) : 0,
    latencyMs: qos === 0 || latency.count === 0 ? null : { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: round(latency.max ?? 0, 2) },
    connectionErrors: result.connectionErrors,
    errors: result.errors,
  };
}

export function formatSummary(s: Summary): string {
  const latency =
    s.latencyMs === null ? 'n/a (QoS 0 has no acknowledgement)' : `p50 ${s.latencyMs.p50} ms  p90 ${s.latencyMs.p90} ms  p99 ${s.latencyMs.p99} ms  max ${s.latencyMs.max} ms`;
  const lines = [
    `${s.profile} → ${s.url}: ${s.devices} devices (${s.connected} connected), QoS ${s.qos}, ${(s.durationMs / 1000).toFixed(1)} s`,
    `  sent               ${s.sent}`,
    `  acked              ${s.acked}${s.qos === 0 ? ' (QoS 0: written to the socket)' : ''}`,
    `  failed             ${s.failed}`,
    `  rate               ${s.rate} msgs/s`,
    `  publish→ack        ${latency}`,
    `  connection errors  ${s.connectionErrors}`,
    ...s.errors.map((e) => `  error: ${e}`),
  ];
  return `${lines.join('\n')}\n`;
}
