// A Kafka far away: how fast a gateway drains a backlog into a Kafka whose round trip is 0, 20
// and 50 ms, with the sink's defaults and with larger batches and windows. The gateway runs in
// this process (startGateway) on a buffer filled first with `messages` messages of 200 bytes
// for one bridge; the time runs from its start until Kafka holds them all.
//
// The round trip is made here, not by the network: this machine's kernel has no netem, and
// Kafka tells its clients to connect to the address it advertises, so a delaying proxy in front
// of it would be bypassed. Every write of this process to a socket whose peer is one of the
// bench Kafka's ports is held back for the round trip (in order, so each request and the
// connection's setup arrive that much later); Kafka's answers come at once.
//
// A sink writes one batch at a time, in order (batchingSink), and the bridge's reader hands it
// at most `buffer.windowSize` messages before its cursor moves; so a sink moves about one batch
// a round trip.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startGateway } from '../src/lib/gateway.ts';
import { benchKafka, benchTopic, createAppendTimeTopic, deleteTopics } from './kafka.ts';
import { waitForRecords } from './load.ts';
import { fillBuffer } from './startup-backlog.ts';
import { ratio } from './stats.ts';

/** The sink's and the buffer's settings measured at each round trip. */
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

export interface DistantKafkaResult {
  readonly messages: number;
  readonly larger: string;
  readonly runs: readonly DistantKafkaRun[];
}

export async function benchDistantKafka(messages: number, rtts: readonly number[], log: (line: string) => void): Promise<DistantKafkaResult> {
  const kafka = await benchKafka(log);
  const topic = benchTopic('distant');
  await createAppendTimeTopic(kafka.brokers, topic);
  const delay = delayWritesTo(kafka.brokers.map((b) => Number(b.split(':').pop())));
  let inKafka = 0;
  try {
    const runs: DistantKafkaRun[] = [];
    for (const rttMs of rtts) {
      delay.set(rttMs);
      const rates: number[] = [];
      for (const settings of SETTINGS) {
        const rate = await drain(kafka.brokers, topic, messages, settings, (inKafka += messages));
        log(`  ${rttMs} ms away, ${settings.name}: ${rate.toLocaleString('en-US')} msgs/s`);
        rates.push(rate);
      }
      const [defaults = 0, larger = 0] = rates;
      runs.push({ rttMs, defaults, larger, largerVsDefaults: ratio(larger, defaults) });
    }
    return { messages, larger: SETTINGS[1].name, runs };
  } finally {
    delay.restore();
    await deleteTopics(kafka.brokers, [topic]).catch(() => {});
    await kafka.stop();
  }
}

/** Starts a gateway on a buffer holding `messages` for a bridge to `topic`; msgs/s from its start until Kafka holds `total` records. */
async function drain(brokers: readonly string[], topic: string, messages: number, settings: (typeof SETTINGS)[number], total: number): Promise<number> {
  const root = mkdtempSync(join(tmpdir(), 'ferry-bench-distant-'));
  try {
    const dataDir = join(root, 'data');
    mkdirSync(dataDir);
    fillBuffer(dataDir, messages, 'distant');
    writeFileSync(
      join(root, 'bridge.yaml'),
      `name: distant\nfrom: { mqtt: { topics: ["devices/#"] } }\nto: [{ kafka: { brokers: "${brokers.join(',')}", topic: ${topic}, acks: all${settings.sink} } }]\n${settings.buffer}`,
    );
    writeFileSync(
      join(root, 'gateway.yaml'),
      'gateway: { name: distant, dataDir: ./data }\nmqtt: { host: 127.0.0.1, port: 0 }\nadmin: { enabled: false }\nlog: { level: warn }\ntelemetry: { ebpf: off }\nbridges: [bridge.yaml]\ndevices: []\n',
    );
    const gateway = await startGateway({ configPath: join(root, 'gateway.yaml') });
    try {
      await gateway.ready;
      const started = performance.now();
      await waitForRecords(brokers, topic, total, 120_000);
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
