import type { MetricSpec } from './spec.ts';

/**
 * The machine, the process and its event loop, read every 2 s (Vitals) and shown at the latest
 * reading; gauges set in gateway-metrics.ts. On a platform without /proc, the network gauges are
 * left out.
 */
export const hostMetrics = [
  {
    name: 'host.cpu.utilisation',
    type: 'gauge',
    unit: 'ratio',
    labels: {},
    help: "Share of all CPU cores' time the machine was busy over the last 2 s (0 to 1; iowait counts as idle).",
  },
  {
    name: 'process.cpu.utilisation',
    type: 'gauge',
    unit: 'ratio',
    labels: {},
    help: "Share of all CPU cores' time the Ferry process used over the last 2 s (0 to 1: 0.5 on two cores is one core busy).",
  },
  { name: 'host.memory.total_bytes', type: 'gauge', unit: 'bytes', labels: {}, help: 'Memory of the machine (MemTotal).' },
  { name: 'host.memory.available_bytes', type: 'gauge', unit: 'bytes', labels: {}, help: 'Memory the machine can give to programs without swapping (MemAvailable).' },
  { name: 'process.memory.rss_bytes', type: 'gauge', unit: 'bytes', labels: {}, help: 'Resident memory of the Ferry process.' },
  { name: 'process.memory.heap_used_bytes', type: 'gauge', unit: 'bytes', labels: {}, help: 'JavaScript heap the Ferry process uses.' },
  {
    name: 'host.disk.free_bytes',
    type: 'gauge',
    unit: 'bytes',
    labels: {},
    help: 'Free space for Ferry on the volume of `gateway.dataDir` (where `buffer.db` grows): when it runs out, device messages are refused.',
  },
  { name: 'host.disk.total_bytes', type: 'gauge', unit: 'bytes', labels: {}, help: 'Size of the volume of `gateway.dataDir`.' },
  {
    name: 'host.network.received_bytes',
    type: 'gauge',
    unit: 'bytes',
    labels: { interface: { meaning: 'the network interface (loopback left out)' } },
    help: 'Bytes the interface received since the machine started (from /proc/net/dev; take its rate()).',
  },
  {
    name: 'host.network.sent_bytes',
    type: 'gauge',
    unit: 'bytes',
    labels: { interface: { meaning: 'the network interface (loopback left out)' } },
    help: 'Bytes the interface sent since the machine started (from /proc/net/dev; take its rate()).',
  },
  {
    name: 'eventloop.delay.p50_seconds',
    type: 'gauge',
    unit: 'seconds',
    labels: {},
    help: 'Median delay of the event loop over the last 2 s: how late a timer due now runs (past a few milliseconds, every message waits that long).',
  },
  { name: 'eventloop.delay.p99_seconds', type: 'gauge', unit: 'seconds', labels: {}, help: "99th percentile of the event loop's delay over the last 2 s." },
  {
    name: 'eventloop.delay.max_seconds',
    type: 'gauge',
    unit: 'seconds',
    labels: {},
    help: 'Longest event-loop delay over the last 2 s (a long synchronous task: a big SQLite query, a GC pause). Timed every 10 ms; every 250 ms after a 2 s window in which the loop was busy less than 2% of the time (a shorter stall then shows only in the utilisation).',
  },
  {
    name: 'eventloop.utilisation',
    type: 'gauge',
    unit: 'ratio',
    labels: {},
    help: 'Share of the last 2 s the event loop spent running code rather than waiting (0 to 1; near 1, the gateway is CPU-bound on its one thread).',
  },
  {
    name: 'host.read_errors',
    type: 'counter',
    unit: 'errors',
    labels: {},
    help: 'Failed reads of the host and process figures (they keep their previous values); logged once until a read succeeds again.',
  },
] as const satisfies readonly MetricSpec[];
