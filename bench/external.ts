// External-broker mode against the embedded broker, at the same offered load: the same fleet of
// QoS 1 publishers (50 devices, 20 in flight each, as fast as PUBACKs come) publishes
//   - into the Ferry gateway itself (the `mqtt` source: embedded broker, buffer, Kafka), and
//   - into a Mosquitto of its own, which Ferry takes from as a client (the `mqttClient` source:
//     Mosquitto, Ferry's subscription, buffer, Kafka), under MQTT 3.1.1 and 5;
// and the throughput is what reaches Kafka: records over the span from the first publish to
// the last append. Mosquitto acknowledges publishers faster than Ferry drains it, so its queue
// for Ferry's session is unbounded here (max_queued_messages 0): what is measured is Ferry's
// rate, with nothing dropped. The paths take turns, three rounds; each figure is the median.
// Goal: external ≥ 0.8 × embedded.
import { connectAsync } from 'mqtt';
import { type PathResult, analyse, payloadFor } from './e2e.ts';
import { type BenchKafka, benchKafka, benchTopic, createAppendTimeTopic, deleteTopics, readRecords } from './kafka.ts';
import { cpuMs, peakRssMb, publishFleet, waitForRecords } from './load.ts';
import { startFerryTarget, startMosquittoTarget } from './targets.ts';
import { ratio } from './stats.ts';

const DEVICES = 50;
const WINDOW = 20;
const WARMUP = 5_000;
const ROUNDS = 3;
const TOPICS = 'devices/+/telemetry/#';
export const EXTERNAL_GOAL = 0.8;

/** Mosquitto as a plant would run it, with an unbounded queue for Ferry's session. */
const MOSQUITTO = { max_queued_messages: '0', set_tcp_nodelay: 'false' } as const;

/** The external paths measured: protocol, and Mosquitto's in-flight window (which MQTT 5's Receive Maximum overrides). */
export const EXTERNAL_PATHS = {
  mqtt311: { protocolVersion: 4, maxInflight: '20', what: 'MQTT 3.1.1, Mosquitto max_inflight_messages 20 (its default)' },
  mqtt311Inflight1000: { protocolVersion: 4, maxInflight: '1000', what: 'MQTT 3.1.1, Mosquitto max_inflight_messages 1000' },
  mqtt5: { protocolVersion: 5, maxInflight: '20', what: 'MQTT 5, Receive Maximum 1000 (maxInFlight)' },
} as const;
type ExternalPath = keyof typeof EXTERNAL_PATHS;

export interface ExternalBenchResult {
  readonly devices: number;
  readonly window: number;
  readonly messages: number;
  readonly rounds: number;
  readonly mosquitto: Readonly<Record<string, string>>;
  /** Each path's round with the median rate. */
  readonly embedded: PathResult;
  readonly external: Readonly<Record<ExternalPath, PathResult>>;
  /** Median rate of the path / median rate of the embedded path. */
  readonly ratios: Readonly<Record<ExternalPath, number>>;
  readonly goal: number;
}

export interface ExternalOptions {
  readonly messages: number;
  readonly log: (line: string) => void;
  /** Directory for CPU profiles of the gateways (node --cpu-prof), none when absent. */
  readonly profileDir?: string;
}

const kafkaSink = (kafka: BenchKafka, topic: string) => `to: [{ kafka: { brokers: "${kafka.brokers.join(',')}", topic: ${topic}, acks: all } }]`;

/** Publishes the warm-up, then the measured messages, into `publishUrl`, and reads what `gatewayPid` carried to Kafka. */
async function measure(kafka: BenchKafka, topic: string, publishUrl: string, gatewayPid: number, messages: number, prefix: string): Promise<PathResult> {
  await publishFleet({ url: publishUrl, devices: DEVICES, window: WINDOW, count: WARMUP, prefix, payload: payloadFor(0) });
  await waitForRecords(kafka.brokers, topic, WARMUP);
  const cpuBefore = cpuMs(gatewayPid);
  const ackedPerSec = await publishFleet({ url: publishUrl, devices: DEVICES, window: WINDOW, count: messages, prefix, payload: payloadFor(1) });
  await waitForRecords(kafka.brokers, topic, WARMUP + messages);
  const cpuMsPer1k = Math.round(((cpuMs(gatewayPid) - cpuBefore) * 10_000) / messages) / 10;
  return { ...analyse(await readRecords(kafka.brokers, topic), messages), ackedPerSec, peakRssMb: peakRssMb(gatewayPid), cpuMsPer1k };
}

async function measureEmbedded(kafka: BenchKafka, topic: string, options: ExternalOptions): Promise<PathResult> {
  const bridge = ['name: bench-embedded', `from: { mqtt: { topics: ["${TOPICS}"] } }`, kafkaSink(kafka, topic), ''].join('\n');
  const gateway = await startFerryTarget({ bridge, nodeArgs: profileArgs(options) });
  try {
    return await measure(kafka, topic, gateway.url, gateway.pid, options.messages, 'emb-');
  } finally {
    await gateway.stop();
  }
}

/** Mosquitto, and the gateway taking from it; `ackedPerSec` is Mosquitto's rate to the publishers. */
async function measureExternal(kafka: BenchKafka, topic: string, path: ExternalPath, options: ExternalOptions): Promise<PathResult> {
  const { protocolVersion, maxInflight } = EXTERNAL_PATHS[path];
  const mosquitto = await startMosquittoTarget({ ...MOSQUITTO, max_inflight_messages: maxInflight });
  if (mosquitto === undefined) throw new Error('mosquitto is not installed (apt-get install mosquitto)');
  try {
    // Ferry's persistent session, subscribed before Ferry starts: Mosquitto queues every message
    // for it from the first one on, so no message is published before the subscription.
    const clientId = benchTopic('ferry-bench-ext-');
    const session = await connectAsync(mosquitto.url, {
      clientId,
      clean: false,
      protocolVersion,
      ...(protocolVersion === 5 ? { properties: { sessionExpiryInterval: 3600 } } : {}),
    });
    await session.subscribeAsync(TOPICS, { qos: 1 });
    await session.endAsync();
    const bridge = [
      'name: bench-external',
      `from: { mqttClient: { url: "${mosquitto.url}", clientId: ${clientId}, protocolVersion: ${protocolVersion}, topics: ["${TOPICS}"], qos: 1 } }`,
      kafkaSink(kafka, topic),
      '',
    ].join('\n');
    const gateway = await startFerryTarget({ bridge, nodeArgs: profileArgs(options) });
    try {
      return await measure(kafka, topic, mosquitto.url, gateway.pid, options.messages, `${path}-`);
    } finally {
      await gateway.stop();
    }
  } finally {
    await mosquitto.stop();
  }
}

export async function benchExternal(options: ExternalOptions): Promise<ExternalBenchResult> {
  const { log } = options;
  const kafka = await benchKafka(log);
  const topics: string[] = [];
  const topic = async () => {
    const name = benchTopic('ferry-bench-ext-');
    topics.push(name);
    await createAppendTimeTopic(kafka.brokers, name);
    return name;
  };
  const paths = Object.keys(EXTERNAL_PATHS) as ExternalPath[];
  const runs: Record<ExternalPath | 'embedded', PathResult[]> = { embedded: [], mqtt311: [], mqtt311Inflight1000: [], mqtt5: [] };
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      log(`  round ${round} of ${ROUNDS}: embedded broker to Kafka, ${options.messages} messages...`);
      runs.embedded.push(await measureEmbedded(kafka, await topic(), options));
      for (const path of paths) {
        log(`  round ${round} of ${ROUNDS}: Mosquitto to Ferry's mqttClient source to Kafka (${EXTERNAL_PATHS[path].what}), ${options.messages} messages...`);
        runs[path].push(await measureExternal(kafka, await topic(), path, options));
      }
    }
    const embedded = median(runs.embedded);
    const external = Object.fromEntries(paths.map((path) => [path, median(runs[path])])) as Record<ExternalPath, PathResult>;
    const ratios = Object.fromEntries(paths.map((path) => [path, ratio(external[path].perSec, embedded.perSec)])) as Record<ExternalPath, number>;
    return { devices: DEVICES, window: WINDOW, messages: options.messages, rounds: ROUNDS, mosquitto: MOSQUITTO, embedded, external, ratios, goal: EXTERNAL_GOAL };
  } finally {
    await deleteTopics(kafka.brokers, topics).catch((error: unknown) => log(`  could not delete the bench topics: ${String(error)}`));
    await kafka.stop();
  }
}

/** The round with the median rate in Kafka. */
function median(results: readonly PathResult[]): PathResult {
  return [...results].sort((a, b) => a.perSec - b.perSec)[Math.floor(results.length / 2)] as PathResult;
}

const profileArgs = (options: ExternalOptions) => (options.profileDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${options.profileDir}`]);
