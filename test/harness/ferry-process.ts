import { type ChildProcess, type ChildProcessByStdio, spawn } from 'node:child_process';
import { once } from 'node:events';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';

export const FERRY_BIN = fileURLToPath(new URL('../../bin/ferry.js', import.meta.url));
export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface RunningFerry {
  readonly child: ChildProcess;
  readonly mqttUrl: string;
  readonly adminUrl: string;
  /** Every log line so far, parsed. */
  readonly logs: Record<string, unknown>[];
  /** Milliseconds from spawn to the "accepting MQTT connections" log line. */
  readonly readyAfterMs: number;
  /** Resolves with the exit code. */
  readonly exited: Promise<number | null>;
}

/** Runs the built CLI `ferry <args>` to completion. */
export async function ferry(args: readonly string[], env: NodeJS.ProcessEnv = {}, cwd = REPO_ROOT): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [FERRY_BIN, ...args], { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const [code] = (await once(child, 'close')) as [number | null];
  return { code, stdout, stderr };
}

/** The built CLI in a process group of its own, with what it printed so far. */
export interface FerryGroup {
  readonly child: ChildProcessByStdio<null, Readable, Readable>;
  stdout(): string;
  stderr(): string;
  /** Kills its whole group at once, unless it has ended. */
  kill(): void;
  /** Kills it as `kill` does, and lets go of the hook that kills it when the test process exits. */
  stop(): void;
}

/**
 * Starts `ferry <args>` in a process group of its own (so that what it starts dies with it),
 * killed when the test process exits, whatever happens; call `stop()` when done with it.
 */
export function spawnFerryGroup(args: readonly string[]): FerryGroup {
  const child = spawn(process.execPath, [FERRY_BIN, ...args], { cwd: REPO_ROOT, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const kill = () => {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) process.kill(-child.pid, 'SIGKILL');
  };
  process.once('exit', kill);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const stop = () => {
    kill();
    process.off('exit', kill);
  };
  return { child, stdout: () => stdout, stderr: () => stderr, kill, stop };
}

/** Runs `ferry <args>` as `spawnFerryGroup` does, killed after `limitMs` if it has not ended by then: its exit code and output. */
export async function ferryWithin(args: readonly string[], limitMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const run = spawnFerryGroup(args);
  const timer = setTimeout(run.kill, limitMs);
  try {
    const [code] = (await once(run.child, 'exit')) as [number | null];
    return { code, stdout: run.stdout(), stderr: run.stderr() };
  } finally {
    clearTimeout(timer);
    run.stop();
  }
}

/**
 * Starts `ferry run` on free ports and resolves when it accepts MQTT connections. The
 * process is killed when the test process exits, whatever happens.
 */
export async function startFerry(args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<RunningFerry> {
  const started = performance.now();
  const child = spawn(process.execPath, [FERRY_BIN, 'run', '--mqtt-port', '0', '--admin-port', '0', ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const kill = () => child.kill('SIGKILL');
  process.once('exit', kill);
  const exited = once(child, 'exit').then(([code]) => {
    process.off('exit', kill);
    return code as number | null;
  });
  const logs: Record<string, unknown>[] = [];
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  let pending = '';
  return new Promise<RunningFerry>((resolve, reject) => {
    const timer = setTimeout(() => {
      kill();
      reject(new Error(`ferry did not start within 15 s\n${stderr}`));
    }, 15_000);
    exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`ferry exited with ${code} before it was ready\n${stderr}`));
    }, reject);
    child.stdout.on('data', (chunk: Buffer) => {
      pending += chunk.toString();
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) {
        if (line.trim() === '') continue;
        const entry = JSON.parse(line) as Record<string, unknown>;
        logs.push(entry);
        if (typeof entry['msg'] === 'string' && entry['msg'].startsWith('accepting MQTT connections')) {
          clearTimeout(timer);
          const mqttPort = String(entry['mqtt']).split(':').pop();
          resolve({
            child,
            mqttUrl: `mqtt://127.0.0.1:${mqttPort}`,
            adminUrl: String(entry['admin']),
            logs,
            readyAfterMs: performance.now() - started,
            exited,
          });
        }
      }
    });
  });
}
