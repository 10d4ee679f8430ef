import { BRIDGE, type MetricSpec, SINK } from './spec.ts';

/**
 * The gateway's state, read when /metrics is scraped (gateway-metrics.ts sets them from the
 * gateway's status); not counted at call sites.
 */
export const gaugeMetrics = [
  { name: 'up', type: 'gauge', unit: '1', labels: {}, help: '1 while the gateway runs, 0 while it starts or drains.' },
  { name: 'uptime_seconds', type: 'gauge', unit: 'seconds', labels: {}, help: 'Seconds since the gateway started.' },
  {
    name: 'mqtt.clients',
    type: 'gauge',
    unit: 'sockets',
    labels: { listener: { meaning: 'the broker listener', values: ['mqtt', 'mqtts', 'ws'] } },
    help: 'Open sockets per listener.',
  },
  { name: 'mqtt.in_flight', type: 'gauge', unit: 'messages', labels: {}, help: 'Device messages received and not yet acknowledged to their device.' },
  { name: 'buffer.held', type: 'gauge', unit: 'messages', labels: {}, help: 'Messages held unacknowledged by the buffer (full under refuse, disk full, write failing).' },
  {
    name: 'buffer.state',
    type: 'gauge',
    unit: '1',
    labels: { state: { meaning: "the buffer writer's state", values: ['ok', 'disk-full', 'write-failed', 'refusing'] } },
    help: "1 for the buffer writer's current state.",
  },
  { name: 'buffer.messages', type: 'gauge', unit: 'messages', labels: { bridge: BRIDGE }, help: 'Messages a bridge holds on disk.' },
  { name: 'buffer.bytes', type: 'gauge', unit: 'bytes', labels: { bridge: BRIDGE }, help: 'Payload bytes a bridge holds on disk.' },
  { name: 'buffer.pending', type: 'gauge', unit: 'messages', labels: { bridge: BRIDGE, sink: SINK }, help: 'Messages a sink has not confirmed yet.' },
  {
    name: 'buffer.oldest_pending_age_seconds',
    type: 'gauge',
    unit: 'seconds',
    labels: { bridge: BRIDGE, sink: SINK },
    help: 'Age of the oldest message a sink has not confirmed (0 when none).',
  },
  { name: 'buffer.dead_letters', type: 'gauge', unit: 'messages', labels: { bridge: BRIDGE }, help: 'Dead letters a bridge keeps.' },
  {
    name: 'handler.held',
    type: 'gauge',
    unit: 'messages',
    labels: { bridge: BRIDGE },
    help: "Messages a TypeScript bridge's handler holds or whose outputs are not confirmed yet.",
  },
  {
    name: 'handler.held_oldest_age_seconds',
    type: 'gauge',
    unit: 'seconds',
    labels: { bridge: BRIDGE },
    help: "Age of the oldest message a TypeScript bridge's handler holds (0 when none); past its `maxHoldMs` the bridge is degraded.",
  },
] as const satisfies readonly MetricSpec[];
