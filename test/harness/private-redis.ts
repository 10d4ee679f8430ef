import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { canConnect, freePorts } from './net.ts';

export interface PrivateRedis {
  readonly url: string;
  readonly port: number;
  /** Stops it (SIGKILL by default: a crash) and waits for the exit. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /**
   * Starts it again on the same port, empty (nothing is saved): a restarted server, scripts
   * flushed. `args` replace the extra server options it was first started with, for this start.
   */
  start(args?: readonly string[]): Promise<void>;
}

/**
 * A redis-server of its own on a free loopback port, without persistence, for tests that stop,
 * restart or fill the server (the machine's shared one on 6379 is never touched). It runs in
 * its own process group, killed when the test process exits. `args` are extra server options
 * (`['--maxmemory', '2mb']`).
 */
export async function startPrivateRedis(args: readonly string[] = []): Promise<PrivateRedis> {
  const [port] = (await freePorts(1)) as [number];
  let child: ChildProcess | undefined;
  const kill = () => {
    if (child?.pid !== undefined && child.exitCode === null && child.signalCode === null) process.kill(-child.pid, 'SIGKILL');
  };
  process.on('exit', kill);

  const start = async (extra: readonly string[] = args) => {
    const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...extra], {
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = proc;
    let output = '';
    proc.stdout?.on('data', (c: Buffer) => (output += c.toString()));
    proc.stderr?.on('data', (c: Buffer) => (output += c.toString()));
    const exited = once(proc, 'exit');
    for (let i = 0; i < 100; i++) {
      if (await canConnect({ host: '127.0.0.1', port }, 500)) return;
      if (proc.exitCode !== null) break;
      await sleep(100);
    }
    kill();
    await exited;
    throw new Error(`redis-server did not start on port ${port}: ${output}`);
  };
  await start();

  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    start,
    stop: async (signal = 'SIGKILL') => {
      const proc = child;
      if (proc?.pid === undefined || proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = once(proc, 'exit');
      process.kill(-proc.pid, signal);
      await exited;
      if (proc === child) child = undefined;
    },
  };
}
