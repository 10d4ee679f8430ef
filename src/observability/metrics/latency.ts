import { BRIDGE, type MetricSpec, SINK } from './spec.ts';

/** Powers of two from 2 µs to ~16.8 s: bpftrace's `hist()` buckets, in seconds. */
const LOG2_MICROSECONDS = Array.from({ length: 24 }, (_, k) => 2 ** (k + 1) / 1e6);

/** Where messages wait: the group commit, sink writes, the age of a message when it is confirmed upstream, and the eBPF view of fsync. */
export const latencyMetrics = [
  {
    name: 'buffer.commit_seconds',
    type: 'histogram',
    unit: 'seconds',
    labels: {},
    help: "Time of one group commit of the buffer (the inserts and the transaction's fsync), after which its devices get their PUBACKs.",
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
  },
  {
    name: 'sink.write_seconds',
    type: 'histogram',
    unit: 'seconds',
    labels: { bridge: BRIDGE, sink: SINK },
    help: 'Time of one batch write a sink confirmed (a Kafka produce, a Postgres insert, an MQTT PUBACK), from the start of the write to its confirmation.',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  },
  {
    name: 'sink.message_age_seconds',
    type: 'histogram',
    unit: 'seconds',
    labels: { bridge: BRIDGE, sink: SINK },
    help: 'Age of a message when its sink confirmed it, from its arrival at the gateway: the device-to-upstream latency, including time spent buffered during an outage.',
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600],
  },
  {
    name: 'ebpf.fsync_seconds',
    type: 'histogram',
    unit: 'seconds',
    labels: { call: { meaning: 'the libc call', values: ['fsync', 'fdatasync'] } },
    help: "Latency of the gateway's fsync and fdatasync calls as the eBPF collector measured them (uprobes on libc; bpftrace's power-of-two buckets, each counted at its upper bound).",
    buckets: LOG2_MICROSECONDS,
  },
  {
    name: 'ebpf.cpu_samples',
    type: 'counter',
    unit: 'samples',
    labels: { thread: { meaning: "the thread's name (`node` is the main thread; `libuv-worker`, `V8 Worker`...)" } },
    help: 'On-CPU samples of the gateway by thread, taken 99 times a second by the eBPF collector (`profile:hz:99`): 99 samples are one CPU-second.',
  },
] as const satisfies readonly MetricSpec[];
