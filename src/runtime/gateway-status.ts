import type { BridgeStats } from '../buffer/store.ts';
import type { WriterState } from '../buffer/writer.ts';
import type { VitalsReading } from '../observability/vitals.ts';
import type { BridgeStatus } from './bridge.ts';
import type { Health } from './health.ts';

/** What `/api/status` answers: the gateway, its listeners, bridges, buffer, health and counters. */
export interface GatewayStatus {
  readonly gateway: string;
  readonly version: string;
  readonly state: 'running' | 'draining' | 'stopped';
  readonly uptimeSeconds: number;
  readonly startupMs: number;
  readonly dataDir: string;
  /** Broker listeners (mqtt, mqtts, ws; `clients` counts their open sockets) and the admin server (http). */
  readonly listeners: readonly { protocol: string; host: string; port: number; clients?: number }[];
  readonly bridges: readonly BridgeStatus[];
  readonly inFlight: number;
  readonly buffer: {
    readonly state: WriterState;
    /** Deliveries held unacknowledged (bridge full under `refuse`, or disk full). */
    readonly held: number;
    /** Set when a corrupt buffer database was moved aside at startup. */
    readonly movedAside?: string;
    readonly bridges: readonly BridgeStats[];
  };
  /** Readiness and trouble upstream, as GET /readyz tells them. */
  readonly health: Health;
  readonly counters: Record<string, number>;
  /** Host, process and event loop at the latest reading (every 2 s); null before the first. */
  readonly host: VitalsReading['host'];
  readonly eventLoop: VitalsReading['eventLoop'];
}
