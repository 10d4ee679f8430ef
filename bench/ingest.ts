// MQTT ingest at the publishers: 50 simulated devices (the `ferry simulate` core), 200-byte
// payloads, at most 20 unacknowledged messages per device, as fast as acknowledgements come,
// against three brokers in child processes in one run: the Ferry gateway (history bridge,
// every QoS 1 message committed with synchronous=FULL before its PUBACK), plain aedes (the
// broker inside Ferry, no hooks, nothing stored) and Mosquitto (in-memory). QoS 0 is measured
// up to a QoS 1 fence per device, so it counts messages the broker handled, not just wrote.
// Each rate is the median of three rounds taken in turn over the brokers (ferry, hooks, aedes,
// mosquitto, then again), so a slow moment of the machine does not land on one broker only; a
// QoS 0 round sends four times the messages of a QoS 1 round, or it would last a fraction of a
// second on plain aedes. For the gateway, the QoS 0 round is also timed until its history holds
// every message (the rate the history keeps up with, which a sustained load cannot exceed). A
// last measure takes QoS 1 into a gateway whose history is full (its default `keep`, filled
// first), as a gateway that has run for a while has it.
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { Fleet } from '../src/cli/simulate/fleet.ts';
import { historyPath } from '../src/sqlite/history-store.ts';
import { type Target, historyBridge, startAedesTarget, startFerryTarget, startMosquittoTarget } from './targets.ts';
import { cpuMs, mainThreadMs, mainThreadSince, warmUp } from './load.ts';
import { median, ratio } from './stats.ts';

const DEVICES = 50;
const WINDOW = 20;
const PAYLOAD = Buffer.alloc(200, 'x');
const ROUNDS = 3;
const QOS0_FACTOR = 4;

export interface IngestBenchResult {
  readonly devices: number;
  /** Per QoS 1 round; a QoS 0 round sends `qos0Messages`. */
  readonly messages: number;
  readonly qos0Messages: number;
  readonly rounds: number;
  readonly payloadBytes: number;
  readonly qos1: { ferry: number; aedes: number; mosquitto: number | null; ferryVsAedes: number; ferryVsMosquitto: number | null };
  readonly qos0: { ferry: number; aedes: number; ferryVsAedes: number };
  /**
   * QoS 0 messages taken per second of the main thread's time on a core, the gateway's and plain
   * aedes's (medians): how the two compare with a core each, not sharing two with the load generator.
   */
  readonly qos0OwnCore: { ferry: number; aedes: number; ferryVsAedes: number };
  /** The gateway's QoS 0 round from its first publish until its history held every message, msgs/s. */
  readonly qos0IntoHistory: number;
  /** CPU ms per 1,000 QoS 0 messages (all threads): the gateway's until its history kept them, plain aedes's until it handled them; ferryVsAedes is how many times as much. */
  readonly qos0Cpu: { ferry: number; aedes: number; ferryVsAedes: number };
  /**
   * The broker's hardening alone: `ferry run` with no bridge (nothing stored, every message
   * acknowledged once the checks passed: packet-size guard, login, ACL, topic limits,
   * connection limits) against plain aedes.
   */
  readonly hardening: { qos1: number; qos0: number; qos1VsAedes: number; qos0VsAedes: number };
  /** QoS 1 into `ferry run` whose history bridge (default `keep`) was filled first with `prefill` messages. */
  readonly historyFull: { prefill: number; qos1: number; qos1VsAedes: number };
}

/** Messages/s of `messages` published by 50 devices (20 in flight each), counted when acknowledged. */
export async function ackedRate(url: string, qos: 0 | 1, messages: number): Promise<number> {
  const fleet = new Fleet({
    url,
    clientIds: Array.from({ length: DEVICES }, (_, i) => `bench-${i + 1}`),
    qos,
    ratePerSec: 0,
    window: WINDOW,
    count: messages,
    topic: (clientId) => `devices/${clientId}/telemetry/bench`,
    payload: () => PAYLOAD,
    drainTimeoutMs: 60_000,
    fence: true,
  });
  await fleet.connect();
  const result = await fleet.run();
  if (result.acked !== messages) throw new Error(`${url}: ${result.acked} of ${messages} acknowledged (${result.errors.join('; ')})`);
  return Math.round((result.acked * 1000) / result.elapsedMs);
}

interface Rates {
  qos1: number;
  qos0: number;
  /** The gateway's only: QoS 0 messages per second into its history (0 for the others). */
  qos0IntoHistory: number;
  /** QoS 0 messages taken per second of the main thread's time on a core (0 where not measured). */
  qos0PerSecOnCore: number;
  /** The process's CPU (all threads) per 1,000 QoS 0 messages, from the round's first publish until they were handled, and for the gateway kept in its history. */
  qos0CpuMsPer1k: number;
}

async function measure(target: Target & { readonly pid?: number }, messages: number, qos0: boolean, historyDir?: string): Promise<Rates> {
  let history: Awaited<ReturnType<typeof historyRows>> | undefined;
  try {
    await warmUp(() => ackedRate(target.url, 1, Math.min(10_000, messages)));
    const qos1 = await ackedRate(target.url, 1, messages);
    if (!qos0) return { qos1, qos0: 0, qos0IntoHistory: 0, qos0PerSecOnCore: 0, qos0CpuMsPer1k: 0 };
    history = historyDir === undefined ? undefined : await historyRows(historyDir);
    const before = history === undefined ? 0 : await history.settled();
    const started = performance.now();
    const { pid } = target;
    const thread = pid === undefined ? undefined : mainThreadMs(pid);
    const cpu = pid === undefined ? 0 : cpuMs(pid);
    const cpuPer1k = () => (pid === undefined ? 0 : Math.round(((cpuMs(pid) - cpu) * 10_000) / (messages * QOS0_FACTOR)) / 10);
    const rate = await ackedRate(target.url, 0, messages * QOS0_FACTOR);
    const qos0PerSecOnCore = pid === undefined || thread === undefined ? 0 : mainThreadSince(pid, thread, performance.now() - started, messages * QOS0_FACTOR).perSecOnCore;
    if (history === undefined) return { qos1, qos0: rate, qos0IntoHistory: 0, qos0PerSecOnCore, qos0CpuMsPer1k: cpuPer1k() };
    // Every QoS 0 message and the round's fences (one QoS 1 message per device).
    await history.reached(before + messages * QOS0_FACTOR + DEVICES);
    const intoHistory = Math.round((messages * QOS0_FACTOR * 1000) / (performance.now() - started));
    return { qos1, qos0: rate, qos0IntoHistory: intoHistory, qos0PerSecOnCore, qos0CpuMsPer1k: cpuPer1k() };
  } finally {
    history?.close();
    await target.stop();
  }
}

/** The row count the bench bridge's history keeps (history_counts, written with its rows), read from another connection. */
async function historyRows(dataDir: string) {
  const BRIDGE = 'bench-history';
  for (let waited = 0; ; waited += 20) {
    try {
      const db = new Database(historyPath(dataDir), { readonly: true, fileMustExist: true });
      const count = db.prepare<[string], number>('SELECT rows FROM history_counts WHERE bridge = ?').pluck();
      const rows = () => count.get(BRIDGE) ?? 0;
      return {
        /** The count once it stopped moving (the messages before are all written). */
        async settled(): Promise<number> {
          let last = -1;
          for (let n = rows(); n !== last; n = rows()) {
            last = n;
            await sleep(200);
          }
          return last;
        },
        async reached(total: number): Promise<void> {
          for (let polls = 0; rows() < total; polls++) {
            if (polls > 6_000) throw new Error(`the history holds ${rows()} of ${total} messages after 60 s`);
            await sleep(10);
          }
        },
        close: () => db.close(),
      };
    } catch (error) {
      if (waited > 10_000) throw error;
      await sleep(20);
    }
  }
}

/** The history bridge at its default `keep` (100,000), and more messages than that to fill it. */
const FULL_HISTORY = historyBridge('{}');
const PREFILL = 110_000;

async function historyFull(messages: number): Promise<number> {
  const target = await startFerryTarget({ bridge: FULL_HISTORY });
  try {
    await ackedRate(target.url, 1, PREFILL);
    return await ackedRate(target.url, 1, messages);
  } finally {
    await target.stop();
  }
}

export async function benchIngest(messages = 50_000): Promise<IngestBenchResult> {
  const rounds: Record<'ferry' | 'hooks' | 'aedes' | 'mosquitto', Rates[]> = { ferry: [], hooks: [], aedes: [], mosquitto: [] };
  const full: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    full.push(await historyFull(messages));
    const gateway = await startFerryTarget();
    rounds.ferry.push(await measure(gateway, messages, true, gateway.dataDir));
    rounds.hooks.push(await measure(await startFerryTarget({ bridge: null }), messages, true));
    rounds.aedes.push(await measure(await startAedesTarget(), messages, true));
    const mosquittoTarget = await startMosquittoTarget();
    if (mosquittoTarget !== undefined) rounds.mosquitto.push(await measure(mosquittoTarget, messages, false));
  }
  const middle = (runs: Rates[]): Rates => ({
    qos1: median(runs.map((r) => r.qos1)),
    qos0: median(runs.map((r) => r.qos0)),
    qos0IntoHistory: median(runs.map((r) => r.qos0IntoHistory)),
    qos0PerSecOnCore: median(runs.map((r) => r.qos0PerSecOnCore)),
    qos0CpuMsPer1k: median(runs.map((r) => r.qos0CpuMsPer1k)),
  });
  const [ferry, hooks, aedes] = [middle(rounds.ferry), middle(rounds.hooks), middle(rounds.aedes)];
  const mosquitto = rounds.mosquitto.length === 0 ? undefined : middle(rounds.mosquitto);
  return {
    devices: DEVICES,
    messages,
    qos0Messages: messages * QOS0_FACTOR,
    rounds: ROUNDS,
    payloadBytes: PAYLOAD.length,
    qos1: {
      ferry: ferry.qos1,
      aedes: aedes.qos1,
      mosquitto: mosquitto?.qos1 ?? null,
      ferryVsAedes: ratio(ferry.qos1, aedes.qos1),
      ferryVsMosquitto: mosquitto === undefined ? null : ratio(ferry.qos1, mosquitto.qos1),
    },
    qos0: { ferry: ferry.qos0, aedes: aedes.qos0, ferryVsAedes: ratio(ferry.qos0, aedes.qos0) },
    qos0OwnCore: { ferry: ferry.qos0PerSecOnCore, aedes: aedes.qos0PerSecOnCore, ferryVsAedes: ratio(ferry.qos0PerSecOnCore, aedes.qos0PerSecOnCore) },
    qos0IntoHistory: ferry.qos0IntoHistory,
    qos0Cpu: { ferry: ferry.qos0CpuMsPer1k, aedes: aedes.qos0CpuMsPer1k, ferryVsAedes: ratio(ferry.qos0CpuMsPer1k, aedes.qos0CpuMsPer1k) },
    hardening: { qos1: hooks.qos1, qos0: hooks.qos0, qos1VsAedes: ratio(hooks.qos1, aedes.qos1), qos0VsAedes: ratio(hooks.qos0, aedes.qos0) },
    historyFull: { prefill: PREFILL, qos1: median(full), qos1VsAedes: ratio(median(full), aedes.qos1) },
  };
}
