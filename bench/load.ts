// What the benchmarks that drive a gateway share: a fleet of QoS 1 publishers, a wait for the
// records in Kafka, and a process's CPU time and peak memory from /proc.
import { readFileSync } from 'node:fs';
import { Kafka, logLevel } from 'kafkajs';
import { Fleet } from '../src/cli/simulate/fleet.ts';
import { benchTopic } from './kafka.ts';

export interface FleetLoad {
  readonly url: string;
  readonly devices: number;
  /** QoS 1 messages each device has unacknowledged at most. */
  readonly window: number;
  readonly count: number;
  /** Client ids are `${prefix}1`..`${prefix}${devices}`. */
  readonly prefix: string;
  readonly payload: (device: number, seq: number) => Buffer;
  /** Messages per second over all devices; as fast as PUBACKs come when absent. */
  readonly ratePerSec?: number;
}

/** Publishes `count` QoS 1 messages from the devices (as fast as PUBACKs come, or at `ratePerSec`); returns PUBACKs per second. */
export async function publishFleet(load: FleetLoad): Promise<number> {
  const fleet = new Fleet({
    url: load.url,
    clientIds: Array.from({ length: load.devices }, (_, i) => `${load.prefix}${i + 1}`),
    qos: 1,
    ratePerSec: load.ratePerSec ?? 0,
    window: load.window,
    count: load.count,
    topic: (clientId) => `devices/${clientId}/telemetry/bench`,
    payload: load.payload,
    drainTimeoutMs: 120_000,
  });
  await fleet.connect();
  const result = await fleet.run();
  if (result.acked !== load.count) throw new Error(`${load.url}: ${result.acked} of ${load.count} acknowledged (${result.errors.join('; ')})`);
  return Math.round((result.acked * 1000) / result.elapsedMs);
}

/**
 * How long a broker is kept under load before a measure starts. `ferry run` holds V8's
 * optimizing compiler back from its start until its event loop has been busy for about 0.5 s
 * (src/runtime/compiler-tiering.ts), once in the life of the process: a warm-up of a fixed
 * 5,000 messages (0.1-0.2 s here) left that to the measured phase, which then measured a gateway
 * just started rather than one running. Every broker measured gets the same warm-up.
 * `FERRY_BENCH_WARMUP_MS` changes it (0: one burst).
 */
export const WARMUP_MS = Number(process.env['FERRY_BENCH_WARMUP_MS'] ?? 1_500);
if (!Number.isFinite(WARMUP_MS) || WARMUP_MS < 0) {
  throw new Error(`FERRY_BENCH_WARMUP_MS must be a number of milliseconds, 0 or more; it is '${process.env['FERRY_BENCH_WARMUP_MS']}'`);
}

/**
 * Runs `round` (publishes a burst and resolves when it was acknowledged) until `WARMUP_MS` have
 * passed, at least once; returns how many rounds ran. Bursts long enough that the reconnect
 * between two is not an idle spell of the broker: a few tenths of a second each.
 */
export async function warmUp(round: () => Promise<unknown>): Promise<number> {
  const until = performance.now() + WARMUP_MS;
  let rounds = 0;
  do {
    await round();
    rounds += 1;
  } while (performance.now() < until);
  return rounds;
}

/** Waits until `topic` holds `total` records; fails when none arrives for `stallMs`. */
export async function waitForRecords(brokers: readonly string[], topic: string, total: number, stallMs = 60_000): Promise<void> {
  const admin = new Kafka({ clientId: benchTopic('ferry-bench-watch-'), brokers: [...brokers], logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    let last = -1;
    let progressAt = performance.now();
    for (;;) {
      const high = (await admin.fetchTopicOffsets(topic)).reduce((n, o) => n + Number(o.high), 0);
      if (high >= total) return;
      if (high > last) [last, progressAt] = [high, performance.now()];
      else if (performance.now() - progressAt > stallMs) throw new Error(`${topic}: ${high} of ${total} records in Kafka, none for ${stallMs / 1000} s`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    await admin.disconnect();
  }
}

/** CPU time a process used so far, ms (utime + stime of /proc/<pid>/stat, in clock ticks of 10 ms). */
export function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/**
 * A process's main thread so far (its thread id is the process id), from the scheduler's own
 * accounting (/proc/<pid>/task/<pid>/schedstat): ms on a core, and ms it was ready to run but
 * waited for one while other threads had both.
 */
export function mainThreadMs(pid: number): { readonly onCore: number; readonly waiting: number } {
  const [onCore = Number.NaN, waiting = Number.NaN] = readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').split(' ').map(Number);
  return { onCore: onCore / 1e6, waiting: waiting / 1e6 };
}

/**
 * Where the main thread of the process that carried the messages spent the measured phase. On
 * this 2-core machine the load generator and Kafka share the cores with it, so it is often ready
 * to run and waits for a core; with a core of its own (a 4-core gateway, the devices elsewhere)
 * it would not. `perSecOnCore` is the messages of the phase per second of the thread's time on
 * a core: the rate that one thread's work allows, the ceiling of the process (its other threads,
 * V8's collectors and libuv's pool, run beside it).
 */
export interface MainThread {
  /** Share of the phase the thread was on a core, %. */
  readonly onCorePct: number;
  /** Share of the phase it was ready to run but waited for a core, %. */
  readonly waitingPct: number;
  readonly perSecOnCore: number;
}

/** The main thread of `pid` since `before` (a `mainThreadMs` reading), over `elapsedMs` that carried `messages`. */
export function mainThreadSince(pid: number, before: ReturnType<typeof mainThreadMs>, elapsedMs: number, messages: number): MainThread {
  const now = mainThreadMs(pid);
  const onCore = now.onCore - before.onCore;
  return {
    onCorePct: roundTenth((onCore * 100) / elapsedMs),
    waitingPct: roundTenth(((now.waiting - before.waiting) * 100) / elapsedMs),
    perSecOnCore: Math.round((messages * 1000) / onCore),
  };
}

const roundTenth = (n: number): number => Math.round(n * 10) / 10;

/** Resident set of a process now (VmRSS), MB, unrounded. */
export function rssMb(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match === null ? Number.NaN : Number(match[1]) / 1024;
}

/** Peak resident set of a process (VmHWM), MB. */
export function peakRssMb(pid: number): number {
  const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match === null ? Number.NaN : Math.round(Number(match[1]) / 1024);
}
