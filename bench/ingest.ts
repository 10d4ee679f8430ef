// MQTT ingest at the publishers: 50 simulated devices (the `ferry simulate` core), 200-byte
// payloads, at most 20 unacknowledged messages per device, as fast as acknowledgements come,
// against three brokers in child processes in one run: the Ferry gateway (history bridge,
// every QoS 1 message committed with synchronous=FULL before its PUBACK), plain aedes (the
// broker inside Ferry, no hooks, nothing stored) and Mosquitto (in-memory). QoS 0 is measured
// up to a QoS 1 fence per device, so it counts messages the broker handled, not just wrote.
import { Fleet } from '../src/cli/simulate/fleet.ts';
import { type Target, startAedesTarget, startFerryTarget, startMosquittoTarget } from './targets.ts';

const DEVICES = 50;
const WINDOW = 20;
const PAYLOAD = Buffer.alloc(200, 'x');

export interface IngestBenchResult {
  readonly devices: number;
  readonly messages: number;
  readonly payloadBytes: number;
  readonly qos1: { ferry: number; aedes: number; mosquitto: number | null; ferryVsAedes: number; ferryVsMosquitto: number | null };
  readonly qos0: { ferry: number; aedes: number; ferryVsAedes: number };
  /**
   * The broker's hardening alone: `ferry run` with no bridge (nothing stored, every message
   * acknowledged once the checks passed: packet-size guard, login, ACL, topic limits,
   * connection limits) against plain aedes.
   */
  readonly hardening: { qos1: number; qos0: number; qos1VsAedes: number; qos0VsAedes: number };
}

async function ackedRate(url: string, qos: 0 | 1, messages: number): Promise<number> {
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

async function measure(start: () => Promise<Target>, messages: number, qos0: boolean): Promise<{ qos1: number; qos0: number }> {
  const target = await start();
  try {
    await ackedRate(target.url, 1, Math.min(5_000, messages));
    const qos1 = await ackedRate(target.url, 1, messages);
    return { qos1, qos0: qos0 ? await ackedRate(target.url, 0, messages) : 0 };
  } finally {
    await target.stop();
  }
}

const ratio = (a: number, b: number) => Math.round((a / b) * 100) / 100;

export async function benchIngest(messages = 50_000): Promise<IngestBenchResult> {
  const ferry = await measure(startFerryTarget, messages, true);
  const hooks = await measure(() => startFerryTarget({ bridge: null }), messages, true);
  const aedes = await measure(startAedesTarget, messages, true);
  const mosquitto = await startMosquittoTarget().then((t) => (t === undefined ? undefined : measure(async () => t, messages, false)));
  return {
    devices: DEVICES,
    messages,
    payloadBytes: PAYLOAD.length,
    qos1: {
      ferry: ferry.qos1,
      aedes: aedes.qos1,
      mosquitto: mosquitto?.qos1 ?? null,
      ferryVsAedes: ratio(ferry.qos1, aedes.qos1),
      ferryVsMosquitto: mosquitto === undefined ? null : ratio(ferry.qos1, mosquitto.qos1),
    },
    qos0: { ferry: ferry.qos0, aedes: aedes.qos0, ferryVsAedes: ratio(ferry.qos0, aedes.qos0) },
    hardening: { qos1: hooks.qos1, qos0: hooks.qos0, qos1VsAedes: ratio(hooks.qos1, aedes.qos1), qos0VsAedes: ratio(hooks.qos0, aedes.qos0) },
  };
}
