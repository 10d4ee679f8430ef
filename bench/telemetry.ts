// What telemetry costs end to end: the Ferry gateway to Kafka (as in e2e.ts) with telemetry off,
// with traces (default sampling) and metrics exported over OTLP/HTTP to a receiver on loopback,
// and with the eBPF collector (bpftrace) alone; rounds alternate so that the machine's drift
// hits each the same, and each figure is the median of its rounds.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type PathResult, measureFerry } from './e2e.ts';
import { benchKafka, benchTopic, createAppendTimeTopic, deleteTopics } from './kafka.ts';
import { median, ratio } from './stats.ts';

export interface TelemetryBenchResult {
  readonly messages: number;
  readonly rounds: number;
  readonly off: Summary;
  readonly otlp: Summary & { readonly exportedBytes: number };
  readonly ebpf: Summary;
  /** Throughput with OTLP export over without (goal ≥ 0.9); CPU per message without over with. */
  readonly otlpRatio: { readonly throughput: number; readonly cpu: number };
  /** The same for the eBPF collector (goal ≥ 0.95). */
  readonly ebpfRatio: { readonly throughput: number; readonly cpu: number };
}

interface Summary {
  readonly perSec: number;
  readonly cpuMsPer1k: number;
  readonly p99Ms: number;
  readonly missing: number;
}

function summary(results: readonly PathResult[]): Summary {
  return {
    perSec: median(results.map((r) => r.perSec)),
    cpuMsPer1k: median(results.map((r) => r.cpuMsPer1k)),
    p99Ms: median(results.map((r) => r.latencyMs.p99)),
    missing: results.reduce((n, r) => n + r.missing, 0),
  };
}

/** An OTLP/HTTP receiver that takes every export and counts its bytes. */
async function startSink(): Promise<{ url: string; bytes: () => number; close(): Promise<void> }> {
  let bytes = 0;
  const server = createServer((req, res) => {
    req.on('data', (chunk: Buffer) => (bytes += chunk.length));
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    bytes: () => bytes,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

export async function benchTelemetry(messages: number, rounds: number, log: (line: string) => void): Promise<TelemetryBenchResult> {
  const kafka = await benchKafka(log);
  const sink = await startSink();
  const topics: string[] = [];
  const configs = {
    off: '{ ebpf: off }',
    // The defaults: traces at ratio 0.1, metrics every 15 s (at least one export a round), logs not exported.
    otlp: `{ endpoint: "${sink.url}", ebpf: off }`,
    ebpf: '{ ebpf: auto }',
  };
  const results: Record<keyof typeof configs, PathResult[]> = { off: [], otlp: [], ebpf: [] };
  try {
    for (let round = 1; round <= rounds; round++) {
      for (const name of Object.keys(configs) as (keyof typeof configs)[]) {
        const topic = benchTopic(`ferry-bench-telemetry-${name}-`);
        topics.push(topic);
        await createAppendTimeTopic(kafka.brokers, topic);
        const result = await measureFerry(kafka, topic, { messages, log }, configs[name]);
        log(`  round ${round}, telemetry ${name}: ${result.perSec} msgs/s, ${result.cpuMsPer1k} CPU ms / 1,000 messages`);
        results[name].push(result);
      }
    }
    const off = summary(results.off);
    const otlp = summary(results.otlp);
    const ebpf = summary(results.ebpf);
    return {
      messages,
      rounds,
      off,
      otlp: { ...otlp, exportedBytes: sink.bytes() },
      ebpf,
      otlpRatio: { throughput: ratio(otlp.perSec, off.perSec), cpu: ratio(off.cpuMsPer1k, otlp.cpuMsPer1k) },
      ebpfRatio: { throughput: ratio(ebpf.perSec, off.perSec), cpu: ratio(off.cpuMsPer1k, ebpf.cpuMsPer1k) },
    };
  } finally {
    await sink.close();
    await deleteTopics(kafka.brokers, topics).catch((error: unknown) => log(`  could not delete the bench topics: ${String(error)}`));
    await kafka.stop();
  }
}
