// The Kafka client, measured (issue 11): the producer path Ferry's Kafka sink takes (batches of
// 500 records of 200 bytes, a key and two headers each as the sink sets them, acks all, up to
// 4 batches in flight) through kafkajs 2.2.4 with Ferry's patches and through
// @platformatic/kafka, each in a process of its own, alternating, 3 rounds, medians: records
// per second acknowledged and the producing process's CPU time per 1,000 records. A spike:
// @platformatic/kafka is not a dependency of Ferry (it needs Node 22.22 or newer, Ferry 22.12);
// it is installed into ~/.cache/ferry-bench/platformatic-kafka on first use.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { median, ratio } from './stats.ts';

const PLATFORMATIC_VERSION = '2.12.1';
const PLATFORMATIC_DIR = join(homedir(), '.cache/ferry-bench/platformatic-kafka');
const PLATFORMATIC_ENTRY = join(PLATFORMATIC_DIR, 'node_modules/@platformatic/kafka/dist/index.js');
const BATCH = 500;
const IN_FLIGHT = 4;
const PAYLOAD_BYTES = 200;

type Client = 'kafkajs' | 'platformatic';

export interface KafkaClientRun {
  readonly perSec: number;
  readonly cpuMsPer1k: number;
}

export interface KafkaClientsResult {
  readonly records: number;
  readonly kafkajs: KafkaClientRun;
  readonly platformatic: KafkaClientRun;
  /** platformatic / kafkajs: above 1 is faster for the rate, below 1 is cheaper for the CPU. */
  readonly ratios: { readonly perSec: number; readonly cpu: number };
}

interface Record200 {
  readonly key: Buffer;
  readonly value: Buffer;
  /** The headers as each client takes them, made before the clock starts: kafkajs an object, @platformatic/kafka a Map of buffers. */
  readonly headerObject: Readonly<Record<string, Buffer>>;
  readonly headerMap: ReadonlyMap<Buffer, Buffer>;
}

const FERRY_ID = Buffer.from('0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b');

function batches(count: number): Record200[][] {
  const out: Record200[][] = [];
  for (let i = 0; i < count; i += BATCH) {
    out.push(
      Array.from({ length: Math.min(BATCH, count - i) }, (_, j) => {
        const topic = Buffer.from(`devices/device-${(i + j) % 50}/telemetry/bench`);
        return {
          key: Buffer.from(`device-${(i + j) % 50}`),
          value: Buffer.alloc(PAYLOAD_BYTES, (i + j) % 251),
          headerObject: { 'ferry-id': FERRY_ID, 'mqtt-topic': topic },
          headerMap: new Map([
            [Buffer.from('ferry-id'), FERRY_ID],
            [Buffer.from('mqtt-topic'), topic],
          ]),
        };
      }),
    );
  }
  return out;
}

/** Sends every batch, IN_FLIGHT at a time; resolves when all were acknowledged. */
async function sendAll(all: Record200[][], send: (batch: Record200[]) => Promise<unknown>): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < all.length) await send(all[next++] as Record200[]);
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, lane));
}

/** In a child process: produces `records` records to `topic` after a warm-up; prints the run as JSON. */
async function child(which: Client, brokers: string[], topic: string, records: number): Promise<void> {
  let send: (batch: Record200[]) => Promise<unknown>;
  let close: () => Promise<unknown>;
  if (which === 'kafkajs') {
    (await import('../src/kafka/kafkajs-patches.ts')).patchKafkajs();
    const { Kafka, logLevel } = await import('kafkajs');
    const producer = new Kafka({ clientId: 'ferry-bench', brokers, logLevel: logLevel.NOTHING }).producer();
    await producer.connect();
    send = (batch) => producer.send({ topic, acks: -1, messages: batch.map((r) => ({ key: r.key, value: r.value, headers: r.headerObject })) });
    close = () => producer.disconnect();
  } else {
    const { Producer } = (await import(pathToFileURL(PLATFORMATIC_ENTRY).href)) as {
      Producer: new (options: Record<string, unknown>) => { send(options: Record<string, unknown>): Promise<unknown>; close(): Promise<unknown> };
    };
    const producer = new Producer({ clientId: 'ferry-bench', bootstrapBrokers: brokers, acks: -1 });
    send = (batch) => producer.send({ messages: batch.map((r) => ({ topic, key: r.key, value: r.value, headers: r.headerMap })) });
    close = () => producer.close();
  }
  await sendAll(batches(5_000), send);
  const work = batches(records);
  const cpu = process.cpuUsage();
  const started = performance.now();
  await sendAll(work, send);
  const elapsed = performance.now() - started;
  const used = process.cpuUsage(cpu);
  await close();
  const run: KafkaClientRun = { perSec: Math.round((records * 1000) / elapsed), cpuMsPer1k: Math.round(((used.user + used.system) / 1000 / records) * 1000 * 10) / 10 };
  process.stdout.write(JSON.stringify(run));
}

function ensurePlatformatic(log: (line: string) => void): void {
  if (existsSync(PLATFORMATIC_ENTRY)) return;
  log(`  installing @platformatic/kafka@${PLATFORMATIC_VERSION} into ${PLATFORMATIC_DIR} for this comparison...`);
  mkdirSync(PLATFORMATIC_DIR, { recursive: true });
  const npm = spawnSync('npm', ['install', '--prefix', PLATFORMATIC_DIR, '--no-save', '--no-audit', '--no-fund', `@platformatic/kafka@${PLATFORMATIC_VERSION}`], {
    encoding: 'utf8',
  });
  if (npm.status !== 0) throw new Error(`npm install @platformatic/kafka failed: ${npm.stderr}`);
}

export async function benchKafkaClients(options: { readonly records: number; readonly rounds: number; readonly log: (line: string) => void }): Promise<KafkaClientsResult> {
  ensurePlatformatic(options.log);
  // Loaded here, not at the top: this file is also the child, which must apply Ferry's kafkajs
  // patches before anything loads kafkajs (./kafka.ts does), or some would not take effect.
  const { benchKafka, benchTopic, createAppendTimeTopic, deleteTopics } = await import('./kafka.ts');
  const kafka = await benchKafka(options.log);
  const topics: string[] = [];
  try {
    const runs: Record<Client, KafkaClientRun[]> = { kafkajs: [], platformatic: [] };
    for (let round = 0; round < options.rounds; round++) {
      for (const which of ['kafkajs', 'platformatic'] as const) {
        const topic = benchTopic(`ferry-bench-client-${which}-`);
        topics.push(topic);
        await createAppendTimeTopic(kafka.brokers, topic);
        const self = fileURLToPath(import.meta.url);
        const run = spawnSync(process.execPath, ['--import', 'tsx', self, 'child', which, kafka.brokers.join(','), topic, String(options.records)], { encoding: 'utf8' });
        if (run.status !== 0) throw new Error(`${which} producer failed: ${run.stderr}`);
        runs[which].push(JSON.parse(run.stdout) as KafkaClientRun);
        options.log(`  round ${round + 1}, ${which}: ${run.stdout}`);
      }
    }
    const summary = (list: KafkaClientRun[]): KafkaClientRun => ({ perSec: median(list.map((r) => r.perSec)), cpuMsPer1k: median(list.map((r) => r.cpuMsPer1k)) });
    const kafkajs = summary(runs.kafkajs);
    const platformatic = summary(runs.platformatic);
    return {
      records: options.records,
      kafkajs,
      platformatic,
      ratios: { perSec: ratio(platformatic.perSec, kafkajs.perSec), cpu: ratio(platformatic.cpuMsPer1k, kafkajs.cpuMsPer1k) },
    };
  } finally {
    await deleteTopics(kafka.brokers, topics).catch(() => {});
    await kafka.stop();
  }
}

if (process.argv[2] === 'child') await child(process.argv[3] as Client, (process.argv[4] as string).split(','), process.argv[5] as string, Number(process.argv[6]));
