// Kafka for the end-to-end benchmark: the broker (FERRY_TEST_KAFKA, else a throwaway one from
// the test harness), topics stamped with the broker's append time, reading them back, and
// Kafka's own producer performance tool as the ceiling of what the broker takes.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Kafka, logLevel } from 'kafkajs';
import { kafkaClasspath } from '../test/harness/kafka-classpath.ts';
import { startKafka } from '../test/harness/kafka.ts';
import { readTopic } from '../test/harness/kafka-read.ts';
import { requireJava } from '../test/harness/java.ts';

export interface BenchKafka {
  readonly brokers: string[];
  /** Whether this run started the broker (and stops it at the end). */
  readonly started: boolean;
  stop(): Promise<void>;
}

/** The broker in FERRY_TEST_KAFKA, else a single-node KRaft broker started for this run. */
export async function benchKafka(log: (line: string) => void): Promise<BenchKafka> {
  const configured = (process.env['FERRY_TEST_KAFKA'] ?? '')
    .split(',')
    .map((b) => b.trim())
    .filter((b) => b !== '');
  if (configured.length > 0) return { brokers: configured, started: false, stop: async () => {} };
  const harness = await startKafka({ log });
  return { brokers: [harness.bootstrap], started: true, stop: () => harness.stop() };
}

export const benchTopic = (prefix: string): string => `${prefix}${randomBytes(6).toString('hex')}`;

function client(brokers: readonly string[]): Kafka {
  return new Kafka({ clientId: benchTopic('ferry-bench-'), brokers: [...brokers], logLevel: logLevel.NOTHING });
}

/**
 * Creates a one-partition topic whose records carry the time the broker appended them
 * (message.timestamp.type=LogAppendTime), whatever timestamp the producer set: that time,
 * against a publish time in the payload, is the latency from device to Kafka.
 */
export async function createAppendTimeTopic(brokers: readonly string[], topic: string): Promise<void> {
  const admin = client(brokers).admin();
  await admin.connect();
  try {
    await admin.createTopics({
      waitForLeaders: true,
      topics: [{ topic, numPartitions: 1, replicationFactor: 1, configEntries: [{ name: 'message.timestamp.type', value: 'LogAppendTime' }] }],
    });
  } finally {
    await admin.disconnect();
  }
}

export async function deleteTopics(brokers: readonly string[], topics: readonly string[]): Promise<void> {
  const admin = client(brokers).admin();
  await admin.connect();
  try {
    await admin.deleteTopics({ topics: [...topics] });
  } finally {
    await admin.disconnect();
  }
}

export interface TopicRecord {
  /** Broker append time, ms since the epoch. */
  readonly appendedAt: number;
  readonly value: Buffer;
}

/** Every record of a topic, from the start up to the high watermark. */
export async function readRecords(brokers: readonly string[], topic: string, timeoutMs = 120_000): Promise<TopicRecord[]> {
  const records: TopicRecord[] = [];
  for (const m of await readTopic(brokers, topic, timeoutMs)) if (m.value !== null) records.push({ appendedAt: m.timestamp, value: m.value });
  return records;
}

export interface ProducerPerfResult {
  readonly records: number;
  readonly perSec: number;
  readonly avgLatencyMs: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
}

/**
 * Kafka's own org.apache.kafka.tools.ProducerPerformance (kafka-tools from the harness's
 * classpath) with acks=all, as fast as it can: the most this broker takes on this machine.
 */
export async function producerPerformance(brokers: readonly string[], topic: string, records: number, recordBytes: number): Promise<ProducerPerfResult> {
  const java = await requireJava();
  const classpath = await kafkaClasspath(() => {});
  const args = [
    '-Xmx256m',
    '-XX:+UseSerialGC',
    '-cp',
    classpath,
    'org.apache.kafka.tools.ProducerPerformance',
    '--topic',
    topic,
    '--num-records',
    String(records),
    '--record-size',
    String(recordBytes),
    '--throughput',
    '-1',
    // One flag, several values: a repeated --command-property keeps only the last.
    '--command-property',
    `bootstrap.servers=${brokers.join(',')}`,
    'acks=all',
  ];
  const child = spawn(java, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', resolve);
  });
  // "100000 records sent, 48473.1 records/sec (9.25 MB/sec), 814.85 ms avg latency, 1128.00 ms max latency, 936 ms 50th, 1111 ms 95th, 1125 ms 99th, 1128 ms 99.9th."
  const summary = /(\d+) records sent, ([\d.]+) records\/sec \([\d.]+ MB\/sec\), ([\d.]+) ms avg latency, [\d.]+ ms max latency, (\d+) ms 50th, \d+ ms 95th, (\d+) ms 99th/.exec(
    output,
  );
  if (code !== 0 || summary === null) throw new Error(`ProducerPerformance failed (exit ${code}):\n${output.split('\n').slice(-20).join('\n')}`);
  const [, sent, perSec, avg, p50, p99] = summary.map(Number) as [number, number, number, number, number, number];
  return { records: sent, perSec: Math.round(perSec), avgLatencyMs: avg, p50Ms: p50, p99Ms: p99 };
}
