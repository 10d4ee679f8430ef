// Startup and idle footprint of the embedded default (config/gateway.yaml, no external service):
// time from process start to "accepting MQTT connections" (the startup line's startupMs, which
// counts from process start) and the resident set once the gateway has sat idle, with no
// device connected. Each round is a fresh process with an empty data directory; the compiled
// build (dist/) is measured when it is there and current, as `ferry` runs it, and the
// TypeScript sources alongside for comparison. A bare `node -e` gives the floor.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { chooseEntry } from '../bin/entry.js';
import { cpuMs } from './load.ts';
import { readFirst, startAedesTarget, stopChild } from './targets.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** Goals of issue 11 for the embedded default. */
export const STARTUP_GOAL_MS = 300;
export const IDLE_RSS_GOAL_MB = 70;

export interface StartupRun {
  /** The gateway's own startupMs: process start to accepting MQTT connections. */
  readonly startupMs: number;
  /** CPU time (user + system) the process had used when it was ready, ms: less noisy than startupMs on a busy machine. */
  readonly cpuMs: number;
  /** VmRSS after `idleMs` with nothing connected, MB. */
  readonly idleRssMb: number;
}

export interface StartupBenchResult {
  readonly build: 'dist' | 'src';
  readonly rounds: number;
  readonly idleMs: number;
  readonly compiled: Summary | null;
  readonly sources: Summary;
  readonly bareNode: { readonly rssMb: number };
  /** An idle gateway's CPU and wake-ups, and plain aedes's, idle the same way. */
  readonly idle: { readonly gateway: IdleCpu; readonly aedes: IdleCpu };
}

/** What an idle process costs: all its threads, from the scheduler's accounting (/proc/<pid>/task/<tid>/schedstat). */
export interface IdleCpu {
  /** CPU time a second, ms. */
  readonly cpuMsPerSec: number;
  /** Times a thread of it was put on a core a second: each a wake-up of an otherwise sleeping core's worth of work. */
  readonly wakeupsPerSec: number;
}

/**
 * How long a process is left idle before its idle CPU is measured, and measured, ms. The start's
 * own work is not over at once: the gateway's first windows are busy (their event-loop delay
 * timed every 10 ms), and V8's memory reducer collects the start's garbage 8-12 s after it, on
 * its worker threads as well (14-21 ms of CPU a second until then, about 2 after).
 */
const IDLE_SETTLE_MS = 15_000;
const IDLE_MEASURE_MS = 10_000;

export interface Summary {
  readonly startupMs: Spread;
  readonly cpuMs: Spread;
  readonly idleRssMb: Spread;
}

export interface Spread {
  readonly median: number;
  readonly min: number;
  readonly max: number;
}

export async function benchStartup(options: { rounds?: number; idleMs?: number; log?: (line: string) => void } = {}): Promise<StartupBenchResult> {
  const rounds = options.rounds ?? 5;
  const idleMs = options.idleMs ?? 3000;
  const build = chooseEntry(ROOT);
  if (build === 'src') options.log?.('  dist/ is missing or older than src/: run `npm run build` to measure the compiled build');
  const compiledRuns: StartupRun[] = [];
  const sourceRuns: StartupRun[] = [];
  // Alternating rounds, so that a busy spell of the machine falls on both.
  for (let i = 0; i < rounds; i++) {
    if (build === 'dist') compiledRuns.push(await startOnce({}, idleMs));
    sourceRuns.push(await startOnce({ FERRY_FROM_SOURCE: '1' }, idleMs));
  }
  const summary = (runs: readonly StartupRun[]): Summary => ({
    startupMs: spread(runs.map((r) => r.startupMs)),
    cpuMs: spread(runs.map((r) => r.cpuMs)),
    idleRssMb: spread(runs.map((r) => r.idleRssMb)),
  });
  const bare = spawnSync(process.execPath, ['-e', "process.stdout.write(/VmRSS:\\s+(\\d+)/.exec(require('fs').readFileSync('/proc/self/status','utf8'))[1])"], {
    encoding: 'utf8',
  });
  options.log?.(`  idle CPU: one more gateway (${build}) and plain aedes, ${IDLE_SETTLE_MS / 1000} s to settle, then ${IDLE_MEASURE_MS / 1000} s measured...`);
  const idle = { gateway: await idleGateway(build === 'src' ? { FERRY_FROM_SOURCE: '1' } : {}), aedes: await idleAedes() };
  return {
    build,
    rounds,
    idleMs,
    compiled: build === 'dist' ? summary(compiledRuns) : null,
    sources: summary(sourceRuns),
    bareNode: { rssMb: Math.round(Number(bare.stdout) / 102.4) / 10 },
    idle,
  };
}

/** Nanoseconds on a core (field 0) or times put on one (field 2), summed over the threads of `pid`. */
function schedstat(pid: number, field: 0 | 2): number {
  let sum = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      sum += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[field]);
    } catch {
      // A thread that ended meanwhile.
    }
  }
  return sum;
}

async function idleCpu(pid: number): Promise<IdleCpu> {
  await sleep(IDLE_SETTLE_MS);
  const [cpu, wakeups] = [schedstat(pid, 0), schedstat(pid, 2)];
  await sleep(IDLE_MEASURE_MS);
  const seconds = IDLE_MEASURE_MS / 1000;
  return {
    cpuMsPerSec: Math.round((schedstat(pid, 0) - cpu) / 1e4 / seconds) / 100,
    wakeupsPerSec: Math.round((schedstat(pid, 2) - wakeups) / seconds),
  };
}

async function idleGateway(env: NodeJS.ProcessEnv): Promise<IdleCpu> {
  const dataDir = mkdtempSync(join(tmpdir(), 'ferry-bench-idle-'));
  const child = spawnRun(join(ROOT, 'config/gateway.yaml'), dataDir, env);
  try {
    await readLogged(child, 'accepting MQTT connections', 'startupMs');
    return await idleCpu(child.pid as number);
  } finally {
    await stopChild(child);
    rmSync(dataDir, { recursive: true, force: true });
  }
}

async function idleAedes(): Promise<IdleCpu> {
  const aedes = await startAedesTarget();
  try {
    return await idleCpu(aedes.pid);
  } finally {
    await aedes.stop();
  }
}

/** One `ferry run` of the embedded default (or `config`): its startup time and idle RSS; a fresh data directory unless `given`, which is kept. */
export async function startOnce(
  env: NodeJS.ProcessEnv,
  idleMs: number,
  config = join(ROOT, 'config/gateway.yaml'),
  nodeArgs: readonly string[] = [],
  given?: string,
): Promise<StartupRun> {
  const dataDir = given ?? mkdtempSync(join(tmpdir(), 'ferry-bench-startup-'));
  const child = spawnRun(config, dataDir, env, nodeArgs);
  try {
    const startupMs = await readLogged(child, 'accepting MQTT connections', 'startupMs');
    const readyCpuMs = cpuMs(child.pid as number);
    await sleep(idleMs);
    const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
    return { startupMs, cpuMs: readyCpuMs, idleRssMb: Math.round(Number(rss?.[1] ?? 0) / 102.4) / 10 };
  } finally {
    await stopChild(child);
    if (given === undefined) rmSync(dataDir, { recursive: true, force: true });
  }
}

/** `ferry run` of `config` on `dataDir` in a child process, on free ports, its log on the pipe of stdout. */
export function spawnRun(config: string, dataDir: string, env: NodeJS.ProcessEnv = {}, nodeArgs: readonly string[] = []): ChildProcess {
  // Without the variables that turn on the default's Kafka and Postgres bridges.
  const { KAFKA_BROKERS: _k, POSTGRES_URL: _p, FERRY_FROM_SOURCE: _f, ...rest } = process.env;
  return spawn(process.execPath, [...nodeArgs, join(ROOT, 'bin/ferry.js'), 'run', '--config', config, '--mqtt-port', '0', '--admin-port', '0', '--data-dir', dataDir], {
    cwd: ROOT,
    env: { ...rest, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
}

/** The number `field` of the first log line of `child` that holds `text`; rejects when the child exits first. */
export function readLogged(child: ChildProcess, text: string, field: string): Promise<number> {
  return readFirst(
    child,
    (line) => (line.includes(text) ? Number((JSON.parse(line) as Record<string, unknown>)[field]) : undefined),
    (code) => `ferry exited with ${code} before it logged '${text}'`,
  );
}

export function spread(values: readonly number[]): Spread {
  const sorted = [...values].sort((a, b) => a - b);
  return { median: sorted[Math.floor(sorted.length / 2)] as number, min: sorted[0] as number, max: sorted.at(-1) as number };
}
