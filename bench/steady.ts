// Steady load: what the gateway costs at the rates a gateway mostly sees, not only flat out.
// 50 simulated devices publish QoS 1 messages of 200 bytes at a steady total rate (500, 2,000
// and 8,000 msgs/s by default, 10 s each) into the Ferry gateway with one bridge to Kafka (as in
// e2e.ts: the buffer at synchronous=FULL, acks all) and into plain aedes (nothing stored or
// forwarded), one after the other at each rate. Each figure is the process's CPU time (user +
// system, all its threads) over the rate's messages: per 1,000 of them, and as a share of one
// core over the span from the first publish until the last message was in Kafka (for aedes,
// acknowledged). At a steady rate each message comes more or less alone, so it pays for its
// own commit, PUBACK write and Kafka round trip that a flat-out load shares among hundreds. The
// gateway is measured twice: as configured by default, and with `buffer.commitDelayMs: 10`,
// which lets the messages of up to 10 ms share one commit.
import { benchKafka, benchTopic, createAppendTimeTopic, deleteTopics } from './kafka.ts';
import { cpuMs, publishFleet, waitForRecords } from './load.ts';
import { ratio } from './stats.ts';
import { type Target, kafkaBridge, startAedesTarget, startFerryTarget } from './targets.ts';

const DEVICES = 50;
const WINDOW = 20;
const PAYLOAD = Buffer.alloc(200, 'x');
const WARMUP = 5_000;

export interface SteadyBenchResult {
  readonly seconds: number;
  readonly devices: number;
  readonly rates: readonly SteadyRate[];
}

export interface SteadyRate {
  /** The load's total rate, messages per second. */
  readonly perSec: number;
  readonly ferry: SteadyCpu;
  /** The same gateway with `buffer.commitDelayMs: 10`. */
  readonly ferryDelayed: SteadyCpu;
  readonly aedes: SteadyCpu;
  /** Ferry's CPU per message over plain aedes's (how many times as much). */
  readonly ratio: number;
  /** The same with commitDelayMs 10. */
  readonly delayedRatio: number;
}

export interface SteadyCpu {
  readonly cpuMsPer1k: number;
  /** CPU time over the span, as a share of one core (0.25: a quarter of a core). */
  readonly coreShare: number;
}

/** Publishes `count` messages at `perSec` (0: as fast as they are acknowledged) from fresh devices. */
async function publishAt(url: string, perSec: number, count: number, prefix: string): Promise<void> {
  await publishFleet({ url, devices: DEVICES, window: WINDOW, count, prefix, payload: () => PAYLOAD, ratePerSec: perSec });
}

/** CPU of `target` while it takes `count` messages at `perSec`; `settled` waits until they are all through. */
async function measure(target: Target & { readonly pid: number }, perSec: number, count: number, prefix: string, settled: () => Promise<void>): Promise<SteadyCpu> {
  const before = cpuMs(target.pid);
  const started = performance.now();
  await publishAt(target.url, perSec, count, prefix);
  await settled();
  const used = cpuMs(target.pid) - before;
  return { cpuMsPer1k: Math.round((used * 10_000) / count) / 10, coreShare: Math.round((used / (performance.now() - started)) * 1000) / 1000 };
}

export async function benchSteady(options: { rates?: readonly number[]; seconds?: number; log?: (line: string) => void } = {}): Promise<SteadyBenchResult> {
  const rates = options.rates ?? [500, 2_000, 8_000];
  const seconds = options.seconds ?? 10;
  const kafka = await benchKafka(options.log ?? (() => {}));
  const topic = benchTopic('steady');
  await createAppendTimeTopic(kafka.brokers, topic);
  const bridge = kafkaBridge(kafka.brokers, topic);
  const gateway = await startFerryTarget({ bridge });
  const delayed = await startFerryTarget({ bridge, commitDelayMs: 10 });
  const aedes = await startAedesTarget();
  try {
    let inKafka = 0;
    const through = (count: number) => () => waitForRecords(kafka.brokers, topic, (inKafka += count), 60_000);
    for (const target of [gateway, delayed]) {
      await publishAt(target.url, 0, WARMUP, 'warm-');
      await through(WARMUP)();
    }
    await publishAt(aedes.url, 0, WARMUP, 'warm-');
    const results: SteadyRate[] = [];
    const share = (cpu: SteadyCpu) => `${cpu.cpuMsPer1k} (${Math.round(cpu.coreShare * 100)}% of a core)`;
    for (const perSec of rates) {
      const count = perSec * seconds;
      const ferry = await measure(gateway, perSec, count, `f${perSec}-`, through(count));
      const ferryDelayed = await measure(delayed, perSec, count, `d${perSec}-`, through(count));
      const plain = await measure(aedes, perSec, count, `a${perSec}-`, async () => {});
      options.log?.(`  ${perSec} msgs/s, CPU ms per 1,000: gateway ${share(ferry)}, with commitDelayMs 10 ${share(ferryDelayed)}, plain aedes ${share(plain)}`);
      results.push({
        perSec,
        ferry,
        ferryDelayed,
        aedes: plain,
        ratio: ratio(ferry.cpuMsPer1k, plain.cpuMsPer1k),
        delayedRatio: ratio(ferryDelayed.cpuMsPer1k, plain.cpuMsPer1k),
      });
    }
    return { seconds, devices: DEVICES, rates: results };
  } finally {
    await gateway.stop();
    await delayed.stop();
    await aedes.stop();
    await deleteTopics(kafka.brokers, [topic]).catch(() => {});
    await kafka.stop();
  }
}
