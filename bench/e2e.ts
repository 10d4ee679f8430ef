// End to end: simulated devices publish QoS 1 into the Ferry gateway (`ferry run` as a child
// process, one bridge to Kafka, every message committed with synchronous=FULL before its
// PUBACK) and Kafka takes them, against three references measured in the same run:
//   - a naive bridge (bench/naive-bridge.ts): plain aedes in its own process and an mqtt.js
//     subscriber awaiting one kafkajs send per message, the same devices and payloads;
//   - Kafka's own ProducerPerformance on the same broker, same record size, acks=all (Kafka's ceiling);
//   - plain aedes QoS 1 ingest, nothing stored, nothing forwarded (the MQTT ceiling).
// Plain aedes, the gateway and the gateway with its broker state in memory are measured in
// alternating rounds (three by default), so that a slow moment of the machine does not land on
// one of them only: the ratios are of their medians.
// Each payload carries its publish time, device and sequence number; the Kafka topics stamp
// each record with the broker's append time (LogAppendTime), so latency is append time minus
// publish time, read back from Kafka after the run, and throughput is the records in Kafka
// over the span from the first publish to the last append.
import {
  type BenchKafka,
  type ProducerPerfResult,
  benchKafka,
  benchTopic,
  createAppendTimeTopic,
  deleteTopics,
  producerPerformance,
  readRecords,
  type TopicRecord,
} from './kafka.ts';
import { type MainThread, cpuMs, mainThreadMs, mainThreadSince, peakRssMb, publishFleet, waitForRecords as waitForLoad, warmUp } from './load.ts';
import { kafkaBridge, startAedesTarget, startFerryTarget, startScript } from './targets.ts';
import { median, ratio } from './stats.ts';

const DEVICES = 50;
const WINDOW = 20;
const PAYLOAD_BYTES = 200;
/** Messages of one warm-up burst; bursts go on for WARMUP_MS (see load.ts). */
const WARMUP = 10_000;
/** No new record in Kafka for this long while waiting for the last ones is a failure. */
const STALL_MS = 60_000;
/** Alternating rounds of plain aedes and the gateway; `FERRY_BENCH_E2E_ROUNDS` changes it. */
export const ROUNDS = Number(process.env['FERRY_BENCH_E2E_ROUNDS'] ?? 3);
if (!Number.isInteger(ROUNDS) || ROUNDS < 1) {
  throw new Error(`FERRY_BENCH_E2E_ROUNDS must be a whole number of rounds, 1 or more; it is '${process.env['FERRY_BENCH_E2E_ROUNDS']}'`);
}

/** Payload bytes: publish time (epoch ms, float64), device, seq, phase (0 warm-up, 1 measured), then padding. */
const PHASE_AT = 16;

export interface PathResult {
  /** Records of the measured phase in Kafka, each (device, seq) once. */
  readonly delivered: number;
  /** Records of the measured phase that were published and acknowledged. */
  readonly expected: number;
  readonly missing: number;
  readonly duplicates: number;
  /** delivered / (last append − first publish). */
  readonly perSec: number;
  readonly latencyMs: { readonly p50: number; readonly p99: number; readonly max: number };
  /** PUBACKs the devices got per second (from the gateway or broker they publish to). */
  readonly ackedPerSec: number;
  /** VmHWM of the process that carried the messages, MB. */
  readonly peakRssMb: number;
  /**
   * CPU time (user + system) of that process per 1,000 messages of the measured phase, ms:
   * steadier than rates on a machine shared with other work, since waiting for a core is not counted.
   */
  readonly cpuMsPer1k: number;
  /** The gateway's or broker's main thread over the measured phase, where measured. */
  readonly mainThread?: MainThread;
}

export interface E2eBenchResult {
  readonly devices: number;
  readonly window: number;
  readonly payloadBytes: number;
  readonly kafka: { readonly brokers: readonly string[]; readonly startedForRun: boolean };
  /** The gateway's round with the median rate in Kafka. */
  readonly ferry: PathResult;
  /**
   * Every round, in order: plain aedes's ingest and the gateway's rate, CPU and peak; and over
   * them the median CPU and the highest peak, which the goals are judged on with the medians of
   * the rates (`ferry` and `aedesIngest`).
   */
  readonly rounds: {
    readonly aedes: readonly number[];
    readonly ferry: readonly { readonly perSec: number; readonly cpuMsPer1k: number; readonly peakRssMb: number; readonly missing: number; readonly duplicates: number }[];
    readonly summary: { readonly cpuMsPer1k: number; readonly peakRssMb: number };
    /** Each round's main thread: plain aedes's while it took the messages, the gateway's until they were in Kafka. */
    readonly mainThread: { readonly aedes: readonly MainThread[]; readonly ferry: readonly MainThread[] };
  };
  /**
   * Medians over the rounds of what each main thread's work allows (`MainThread.perSecOnCore`):
   * how the two would compare with a core each, not sharing two with the load generator and Kafka.
   */
  readonly ownCore: { readonly ferry: number; readonly aedes: number; readonly ratio: number };
  /** The same gateway with the broker's state in memory (`mqtt.persistence: memory`): its round with the median rate. */
  readonly ferryMemoryState: PathResult;
  readonly naive: PathResult;
  readonly kafkaCeiling: ProducerPerfResult;
  /** The median of the rounds. */
  readonly aedesIngest: { readonly messages: number; readonly perSec: number };
  readonly ratios: { readonly vsNaive: number; readonly vsAedesIngest: number; readonly vsKafkaCeiling: number; readonly sqliteVsMemoryState: number };
}

export interface E2eOptions {
  readonly messages: number;
  readonly naiveMessages: number;
  /** Directory for a CPU profile of the gateway's first round (node --cpu-prof), none when absent. */
  readonly profileDir?: string;
  readonly log: (line: string) => void;
}

export function payloadFor(phase: number, bytes = PAYLOAD_BYTES): (device: number, seq: number) => Buffer {
  return (device, seq) => {
    const payload = Buffer.alloc(bytes, 'x');
    payload.writeDoubleLE(performance.timeOrigin + performance.now(), 0);
    payload.writeUInt32LE(device, 8);
    payload.writeUInt32LE(seq, 12);
    payload[PHASE_AT] = phase;
    return payload;
  };
}

/** Publishes `count` QoS 1 messages of `phase` (of `bytes` each) from the devices; returns PUBACKs per second. */
function publish(url: string, count: number, phase: number, prefix: string, bytes = PAYLOAD_BYTES): Promise<number> {
  return publishFleet({ url, devices: DEVICES, window: WINDOW, count, prefix, payload: payloadFor(phase, bytes) });
}

const waitForRecords = (brokers: readonly string[], topic: string, total: number) => waitForLoad(brokers, topic, total, STALL_MS);

export function analyse(records: readonly TopicRecord[], expected: number): Omit<PathResult, 'ackedPerSec' | 'peakRssMb' | 'cpuMsPer1k'> {
  const seen = new Set<number>();
  const latencies: number[] = [];
  let duplicates = 0;
  let firstPublish = Number.POSITIVE_INFINITY;
  let lastAppend = 0;
  for (const { appendedAt, value } of records) {
    if (value.length < PHASE_AT + 1 || value[PHASE_AT] !== 1) continue;
    const key = value.readUInt32LE(8) * 2 ** 24 + value.readUInt32LE(12);
    if (seen.has(key)) {
      duplicates += 1;
      continue;
    }
    seen.add(key);
    const publishedAt = value.readDoubleLE(0);
    firstPublish = Math.min(firstPublish, publishedAt);
    lastAppend = Math.max(lastAppend, appendedAt);
    latencies.push(appendedAt - publishedAt);
  }
  latencies.sort((a, b) => a - b);
  const at = (q: number) => round1(Math.max(0, latencies[Math.min(latencies.length - 1, Math.ceil(q * latencies.length) - 1)] ?? Number.NaN));
  return {
    delivered: seen.size,
    expected,
    missing: expected - seen.size,
    duplicates,
    perSec: Math.round((seen.size * 1000) / (lastAppend - firstPublish)),
    latencyMs: { p50: at(0.5), p99: at(0.99), max: round1(latencies.at(-1) ?? Number.NaN) },
  };
}

/**
 * The Ferry gateway to Kafka; `telemetry` is its `telemetry:` section (see targets.ts), `persistence`
 * where its broker keeps its state.
 */
export async function measureFerry(
  kafka: BenchKafka,
  topic: string,
  options: Omit<E2eOptions, 'naiveMessages'> & { readonly payloadBytes?: number },
  telemetry?: string,
  persistence: 'sqlite' | 'memory' = 'sqlite',
): Promise<PathResult & { readonly mainThread: MainThread }> {
  const bytes = options.payloadBytes ?? PAYLOAD_BYTES;
  const bridge = kafkaBridge(kafka.brokers, topic);
  const nodeArgs = options.profileDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${options.profileDir}`];
  const gateway = await startFerryTarget({ bridge, nodeArgs: persistence === 'sqlite' ? nodeArgs : [], persistence, ...(telemetry === undefined ? {} : { telemetry }) });
  try {
    const warm = WARMUP * (await warmUp(() => publish(gateway.url, WARMUP, 0, 'e2e-', bytes)));
    await waitForRecords(kafka.brokers, topic, warm);
    const cpuBefore = cpuMs(gateway.pid);
    const threadBefore = mainThreadMs(gateway.pid);
    const started = performance.now();
    const ackedPerSec = await publish(gateway.url, options.messages, 1, 'e2e-', bytes);
    await waitForRecords(kafka.brokers, topic, warm + options.messages);
    const mainThread = mainThreadSince(gateway.pid, threadBefore, performance.now() - started, options.messages);
    const cpuMsPer1k = round1(((cpuMs(gateway.pid) - cpuBefore) * 1000) / options.messages);
    const peakRss = peakRssMb(gateway.pid);
    await gateway.stop();
    return { ...analyse(await readRecords(kafka.brokers, topic), options.messages), ackedPerSec, peakRssMb: peakRss, cpuMsPer1k, mainThread };
  } finally {
    await gateway.stop();
  }
}

async function measureNaive(kafka: BenchKafka, topic: string, messages: number): Promise<PathResult> {
  const warmup = Math.min(1_000, messages);
  const aedes = await startAedesTarget();
  try {
    const bridge = await startScript('naive-bridge.ts', [aedes.url, 'devices/+/telemetry/#', kafka.brokers.join(','), topic]);
    try {
      await publish(aedes.url, warmup, 0, 'naive-');
      await waitForRecords(kafka.brokers, topic, warmup);
      const cpuBefore = cpuMs(bridge.pid) + cpuMs(aedes.pid);
      const ackedPerSec = await publish(aedes.url, messages, 1, 'naive-');
      await waitForRecords(kafka.brokers, topic, warmup + messages);
      const cpuMsPer1k = round1(((cpuMs(bridge.pid) + cpuMs(aedes.pid) - cpuBefore) * 1000) / messages);
      const peakRss = peakRssMb(bridge.pid);
      return { ...analyse(await readRecords(kafka.brokers, topic), messages), ackedPerSec, peakRssMb: peakRss, cpuMsPer1k };
    } finally {
      await bridge.stop();
    }
  } finally {
    await aedes.stop();
  }
}

/** Plain aedes QoS 1 ingest (nothing stored, nothing forwarded) of `messages` of `bytes`: PUBACKs per second, and its main thread meanwhile. */
export async function measureAedesIngest(messages: number, bytes = PAYLOAD_BYTES): Promise<{ readonly perSec: number; readonly mainThread: MainThread }> {
  const aedes = await startAedesTarget();
  try {
    await warmUp(() => publish(aedes.url, WARMUP, 0, 'aedes-', bytes));
    const before = mainThreadMs(aedes.pid);
    const started = performance.now();
    const perSec = await publish(aedes.url, messages, 1, 'aedes-', bytes);
    return { perSec, mainThread: mainThreadSince(aedes.pid, before, performance.now() - started, messages) };
  } finally {
    await aedes.stop();
  }
}

export async function benchE2e(options: E2eOptions): Promise<E2eBenchResult> {
  const { log } = options;
  const kafka = await benchKafka(log);
  const ferryTopics = Array.from({ length: ROUNDS }, () => benchTopic('ferry-bench-e2e-'));
  const memoryTopics = Array.from({ length: ROUNDS }, () => benchTopic('ferry-bench-e2e-memory-'));
  const topics = {
    naive: benchTopic('ferry-bench-naive-'),
    perf: benchTopic('ferry-bench-perf-'),
  };
  const allTopics = [...ferryTopics, ...memoryTopics, ...Object.values(topics)];
  try {
    for (const topic of allTopics) await createAppendTimeTopic(kafka.brokers, topic);
    const aedesRates: number[] = [];
    const aedesThreads: MainThread[] = [];
    const ferryRuns: (PathResult & { readonly mainThread: MainThread })[] = [];
    const memoryRuns: PathResult[] = [];
    const { profileDir, ...unprofiled } = options;
    for (let round = 0; round < ROUNDS; round++) {
      log(`  round ${round + 1} of ${ROUNDS}: plain aedes QoS 1 ingest, ${options.messages} messages...`);
      const aedesRound = await measureAedesIngest(options.messages);
      aedesRates.push(aedesRound.perSec);
      aedesThreads.push(aedesRound.mainThread);
      log(`  round ${round + 1} of ${ROUNDS}: Ferry gateway to Kafka, ${options.messages} messages...`);
      ferryRuns.push(await measureFerry(kafka, ferryTopics[round] as string, round === 0 ? options : unprofiled));
      log(`  round ${round + 1} of ${ROUNDS}: the same with mqtt.persistence: memory, ${options.messages} messages...`);
      memoryRuns.push(await measureFerry(kafka, memoryTopics[round] as string, options, undefined, 'memory'));
      log(`    ${ferryRuns.at(-1)?.perSec} msgs/s in Kafka (state in memory: ${memoryRuns.at(-1)?.perSec}) against ${aedesRates.at(-1)} into plain aedes`);
    }
    const aedesIngest = median(aedesRates);
    const ferryRate = median(ferryRuns.map((run) => run.perSec));
    const ferry = ferryRuns.find((run) => run.perSec === ferryRate) as PathResult;
    const summary = {
      cpuMsPer1k: median(ferryRuns.map((run) => run.cpuMsPer1k)),
      peakRssMb: Math.max(...ferryRuns.map((run) => run.peakRssMb)),
    };
    const ferryThreads = ferryRuns.map((run) => run.mainThread);
    const ownCoreFerry = median(ferryThreads.map((t) => t.perSecOnCore));
    const ownCoreAedes = median(aedesThreads.map((t) => t.perSecOnCore));
    const memoryRate = median(memoryRuns.map((run) => run.perSec));
    const ferryMemoryState = memoryRuns.find((run) => run.perSec === memoryRate) as PathResult;
    log(`  naive bridge (aedes + one awaited kafkajs send per message), ${options.naiveMessages} messages...`);
    const naive = await measureNaive(kafka, topics.naive, options.naiveMessages);
    log(`  Kafka ProducerPerformance, ${options.messages} records of ${PAYLOAD_BYTES} bytes, acks=all...`);
    const kafkaCeiling = await producerPerformance(kafka.brokers, topics.perf, options.messages, PAYLOAD_BYTES);
    return {
      devices: DEVICES,
      window: WINDOW,
      payloadBytes: PAYLOAD_BYTES,
      kafka: { brokers: kafka.brokers, startedForRun: kafka.started },
      ferry,
      rounds: {
        aedes: aedesRates,
        ferry: ferryRuns.map(({ perSec, cpuMsPer1k, peakRssMb, missing, duplicates }) => ({ perSec, cpuMsPer1k, peakRssMb, missing, duplicates })),
        summary,
        mainThread: { aedes: aedesThreads, ferry: ferryThreads },
      },
      ownCore: { ferry: ownCoreFerry, aedes: ownCoreAedes, ratio: ratio(ownCoreFerry, ownCoreAedes) },
      ferryMemoryState,
      naive,
      kafkaCeiling,
      aedesIngest: { messages: options.messages, perSec: aedesIngest },
      ratios: {
        vsNaive: ratio(ferryRate, naive.perSec),
        vsAedesIngest: ratio(ferryRate, aedesIngest),
        vsKafkaCeiling: ratio(ferryRate, kafkaCeiling.perSec),
        sqliteVsMemoryState: ratio(ferryRate, memoryRate),
      },
    };
  } finally {
    await deleteTopics(kafka.brokers, allTopics).catch((error: unknown) => log(`  could not delete the bench topics: ${String(error)}`));
    await kafka.stop();
  }
}

const round1 = (n: number) => Math.round(n * 10) / 10;
