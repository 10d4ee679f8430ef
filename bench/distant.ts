// An upstream far away: how fast a gateway drains a backlog into a Kafka, and into an external
// MQTT broker (Mosquitto with its default TCP settings), whose round trip is 0, 20 and 50 ms,
// with the sinks' defaults and with larger settings. The gateway runs in this process
// (startGateway) on a buffer filled first with `messages` messages of 200 bytes for one bridge;
// the time runs from its start until Kafka holds them all, or the sink confirmed them all.
//
// The round trip is made here, not by the network: this machine's kernel has no netem, and
// Kafka tells its clients to connect to the address it advertises, so a delaying proxy in front
// of it would be bypassed. Every write of this process to a socket whose peer is one of the
// bench Kafka's ports, or the bench Mosquitto's, is held back for the round trip (in order, so
// each request and the connection's setup arrive that much later); the answers come at once.
//
// A sink writes one batch at a time, in order (batchingSink), and the bridge's reader hands it
// at most `buffer.windowSize` messages before its cursor moves; so a sink moves about one batch
// a round trip.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { startGateway } from '../src/lib/gateway.ts';
import { benchKafka, benchTopic, createAppendTimeTopic, deleteTopics } from './kafka.ts';
import { startMosquittoTarget } from './targets.ts';
import { waitForRecords } from './load.ts';
import { fillBuffer } from './startup-backlog.ts';
import { ratio } from './stats.ts';

/** The Kafka sink's and the buffer's settings measured at each round trip. */
const SETTINGS = [
  { name: 'defaults', sink: '', buffer: '' },
  // batchBytes stays at its default (512 KiB): 2,500 messages of 200 bytes fit in it, and Kafka's
  // message.max.bytes (1 MiB by default) bounds what a batch may hold.
  { name: 'batchSize 2500, buffer.windowSize 5000', sink: ', batchSize: 2500', buffer: 'buffer: { windowSize: 5000 }\n' },
] as const;

export interface DistantKafkaRun {
  readonly rttMs: number;
  /** Messages per second into Kafka with the defaults. */
  readonly defaults: number;
  /** The same with the larger batches and window. */
  readonly larger: number;
  readonly largerVsDefaults: number;
}

/** The mqttClient sink's settings (the buffer's at their defaults). */
const MQTT_SETTINGS = [
  { name: 'defaults', sink: '' },
  { name: 'maxInFlight 200', sink: ', maxInFlight: 200' },
] as const;

export interface DistantKafkaResult {
  readonly messages: number;
  readonly larger: string;
  readonly runs: readonly DistantKafkaRun[];
  /** The same into Mosquitto (null when it is not installed); `larger` is MQTT_SETTINGS' second. */
  readonly mqtt: { readonly larger: string; readonly runs: readonly DistantKafkaRun[] } | null;
}

export async function benchDistantKafka(messages: number, rtts: readonly number[], log: (line: string) => void): Promise<DistantKafkaResult> {
  const kafka = await benchKafka(log);
  const topic = benchTopic('distant');
  await createAppendTimeTopic(kafka.brokers, topic);
  // Mosquitto as installed: without TCP_NODELAY, its default.
  const mosquitto = await startMosquittoTarget({ set_tcp_nodelay: 'false' });
  const ports = kafka.brokers.map((b) => Number(b.split(':').pop()));
  if (mosquitto !== undefined) ports.push(Number(new URL(mosquitto.url).port));
  const delay = delayWritesTo(ports);
  let inKafka = 0;
  try {
    const runs: DistantKafkaRun[] = [];
    const mqttRuns: DistantKafkaRun[] = [];
    for (const rttMs of rtts) {
      delay.set(rttMs);
      const rates: number[] = [];
      for (const settings of SETTINGS) {
        const kafkaSink = `kafka: { brokers: "${kafka.brokers.join(',')}", topic: ${topic}, acks: all${settings.sink} }`;
        const rate = await drain(kafkaSink, settings.buffer, messages, () => waitForRecords(kafka.brokers, topic, inKafka + messages, 120_000));
        inKafka += messages;
        log(`  Kafka ${rttMs} ms away, ${settings.name}: ${rate.toLocaleString('en-US')} msgs/s`);
        rates.push(rate);
      }
      const [defaults = 0, larger = 0] = rates;
      runs.push({ rttMs, defaults, larger, largerVsDefaults: ratio(larger, defaults) });
      if (mosquitto === undefined) continue;
      const mqttRates: number[] = [];
      for (const settings of MQTT_SETTINGS) {
        const mqttSink = `mqttClient: { url: "${mosquitto.url}", clientId: bench-distant-${rttMs}-${mqttRates.length}, topic: bench/distant, qos: 1${settings.sink} }`;
        const rate = await drain(mqttSink, '', messages);
        log(`  Mosquitto ${rttMs} ms away, ${settings.name}: ${rate.toLocaleString('en-US')} msgs/s`);
        mqttRates.push(rate);
      }
      const [mqttDefaults = 0, mqttLarger = 0] = mqttRates;
      mqttRuns.push({ rttMs, defaults: mqttDefaults, larger: mqttLarger, largerVsDefaults: ratio(mqttLarger, mqttDefaults) });
    }
    return { messages, larger: SETTINGS[1].name, runs, mqtt: mosquitto === undefined ? null : { larger: MQTT_SETTINGS[1].name, runs: mqttRuns } };
  } finally {
    delay.restore();
    await mosquitto?.stop();
    await deleteTopics(kafka.brokers, [topic]).catch(() => {});
    await kafka.stop();
  }
}

/**
 * Starts a gateway on a buffer holding `messages` for a bridge to `sink` (its YAML); msgs/s from
 * its start until `through` resolves, or, without it, until the sink confirmed every message.
 */
async function drain(sink: string, buffer: string, messages: number, through?: () => Promise<void>): Promise<number> {
  const root = mkdtempSync(join(tmpdir(), 'ferry-bench-distant-'));
  try {
    const dataDir = join(root, 'data');
    mkdirSync(dataDir);
    fillBuffer(dataDir, messages, 'distant');
    writeFileSync(join(root, 'bridge.yaml'), `name: distant\nfrom: { mqtt: { topics: ["devices/#"] } }\nto: [{ ${sink} }]\n${buffer}`);
    writeFileSync(
      join(root, 'gateway.yaml'),
      'gateway: { name: distant, dataDir: ./data }\nmqtt: { host: 127.0.0.1, port: 0 }\nadmin: { enabled: false }\nlog: { level: warn }\ntelemetry: { ebpf: off }\nbridges: [bridge.yaml]\ndevices: []\n',
    );
    const gateway = await startGateway({ configPath: join(root, 'gateway.yaml') });
    try {
      await gateway.ready;
      const started = performance.now();
      if (through !== undefined) await through();
      else while ((gateway.status().buffer.bridges.find((b) => b.bridge === 'distant')?.sinks[0]?.pending ?? 0) > 0) await sleep(10);
      return Math.round((messages * 1000) / (performance.now() - started));
    } finally {
      await gateway.stop();
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

/** Holds back this process's writes to sockets whose peer port is one of `ports` by the round trip set. */
function delayWritesTo(ports: readonly number[]): { set(rttMs: number): void; restore(): void } {
  const peers = new Set(ports);
  const write = net.Socket.prototype.write;
  let rttMs = 0;
  net.Socket.prototype.write = function (this: net.Socket, ...args: unknown[]): boolean {
    const send = () => (write as (...a: unknown[]) => boolean).apply(this, args);
    if (rttMs === 0 || !peers.has(this.remotePort ?? -1)) return send();
    setTimeout(send, rttMs);
    return true;
  } as typeof write;
  return {
    set: (ms) => {
      rttMs = ms;
    },
    restore: () => {
      net.Socket.prototype.write = write;
    },
  };
}
