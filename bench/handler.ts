// Custom handlers against YAML bridges: devices publish QoS 1 into two gateways in turn, one
// with a YAML bridge to Kafka, one with the equivalent TypeScript bridge (map each message to
// the same sink), and the bench compares the gateway's CPU per 1,000 messages, and counts the
// garbage collections the handler's gateway forced and their pauses (node --trace-gc), in one run.
import { benchKafka, benchTopic, deleteTopics } from './kafka.ts';
import { cpuMs, publishFleet, waitForRecords, warmUp } from './load.ts';
import { startFerryTarget } from './targets.ts';

const DEVICES = 20;
const WINDOW = 20;
/** Messages of one warm-up burst; bursts go on for WARMUP_MS (see load.ts). */
const WARMUP = 10_000;

export interface GcStats {
  /** Collections forced by the process (gc() calls), per second of the measured phase. */
  readonly forcedPerSec: number;
  /** Pause of each collection of the measured phase, ms. */
  readonly pauseP99Ms: number;
  readonly pauseMaxMs: number;
  readonly collections: number;
}

export interface HandlerPathResult {
  readonly cpuMsPer1k: number;
  readonly ackedPerSec: number;
  readonly gc: GcStats;
}

export interface HandlerBenchResult {
  readonly messages: number;
  readonly yaml: HandlerPathResult;
  readonly handler: HandlerPathResult;
  /** Handler CPU per message over the YAML bridge's (goal ≤ 1.3). */
  readonly cpuRatio: number;
}

function publish(url: string, count: number, prefix: string): Promise<number> {
  return publishFleet({ url, devices: DEVICES, window: WINDOW, count, prefix, payload: (device, seq) => Buffer.from(JSON.stringify({ device, seq, celsius: 20 + (seq % 10) })) });
}

/** A --trace-gc line: its pause in ms, and whether gc() forced it ("testing"). */
function gcLine(line: string): { pauseMs: number; forced: boolean } | undefined {
  const match = /MB, (?:pooled: [\d.]+ MB, )?([\d.]+) \/ [\d.]+ ms/.exec(line);
  return match === null ? undefined : { pauseMs: Number(match[1]), forced: line.includes('testing') };
}

async function measure(bridgeFile: string, bridge: string, brokers: readonly string[], topic: string, messages: number): Promise<HandlerPathResult> {
  const collections: { pauseMs: number; forced: boolean }[] = [];
  let measuring = false;
  const gateway = await startFerryTarget({
    bridge,
    bridgeFile,
    nodeArgs: ['--trace-gc'],
    onLine: (line) => {
      const gc = measuring ? gcLine(line) : undefined;
      if (gc !== undefined) collections.push(gc);
    },
  });
  try {
    const warm = WARMUP * (await warmUp(() => publish(gateway.url, WARMUP, 'w-')));
    await waitForRecords(brokers, topic, warm);
    const cpuBefore = cpuMs(gateway.pid);
    const started = performance.now();
    measuring = true;
    const ackedPerSec = await publish(gateway.url, messages, 'm-');
    await waitForRecords(brokers, topic, warm + messages);
    measuring = false;
    const seconds = (performance.now() - started) / 1000;
    const pauses = collections.map((c) => c.pauseMs).sort((a, b) => a - b);
    return {
      cpuMsPer1k: round1(((cpuMs(gateway.pid) - cpuBefore) * 1000) / messages),
      ackedPerSec,
      gc: {
        forcedPerSec: round2(collections.filter((c) => c.forced).length / seconds),
        pauseP99Ms: round1(pauses[Math.max(0, Math.ceil(pauses.length * 0.99) - 1)] ?? 0),
        pauseMaxMs: round1(pauses.at(-1) ?? 0),
        collections: collections.length,
      },
    };
  } finally {
    await gateway.stop();
  }
}

export async function benchHandler(messages: number, log: (line: string) => void): Promise<HandlerBenchResult> {
  const kafka = await benchKafka(log);
  const topics = { yaml: benchTopic('ferry-bench-yaml-'), handler: benchTopic('ferry-bench-handler-') };
  const brokers = kafka.brokers.join(',');
  try {
    log(`  YAML bridge to Kafka, ${messages} messages...`);
    const yaml = await measure(
      'bridge.yaml',
      ['name: bench-yaml', 'from: { mqtt: { topics: ["devices/+/telemetry/#"] } }', `to: [{ kafka: { brokers: "${brokers}", topic: ${topics.yaml}, acks: all } }]`, ''].join('\n'),
      kafka.brokers,
      topics.yaml,
      messages,
    );
    log(`  the same as a TypeScript bridge (map each message to the sink), ${messages} messages...`);
    const handler = await measure(
      'bridge.ts',
      [
        "import { map } from 'rxjs';",
        "import { defineBridge } from 'ferry';",
        'export default defineBridge({',
        "  name: 'bench-handler',",
        "  from: { mqtt: { topics: ['devices/+/telemetry/#'] } },",
        `  to: { out: { kafka: { brokers: '${brokers}', topic: '${topics.handler}', acks: 'all' } } },`,
        "  handle: (messages, tools) => messages.pipe(map((m) => tools.to('out', m))),",
        '});',
        '',
      ].join('\n'),
      kafka.brokers,
      topics.handler,
      messages,
    );
    return { messages, yaml, handler, cpuRatio: round2(handler.cpuMsPer1k / yaml.cpuMsPer1k) };
  } finally {
    await deleteTopics(kafka.brokers, Object.values(topics)).catch(() => {});
    await kafka.stop();
  }
}

const round1 = (n: number) => Math.round(n * 10) / 10;
const round2 = (n: number) => Math.round(n * 100) / 100;
