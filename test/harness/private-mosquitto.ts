import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { canConnect, freePorts } from './net.ts';

export interface PrivateMosquitto {
  readonly url: string;
  readonly port: number;
  /** Directory of its config, persistence file and log. */
  readonly dir: string;
  /** Stops it (SIGTERM saves the persistence file; SIGKILL does not) and waits for the exit. */
  stop(signal?: 'SIGTERM' | 'SIGKILL'): Promise<void>;
  /** Starts it again on the same port, config and persistence file. */
  start(): Promise<void>;
  /** Its log so far (log_type all). */
  log(): string;
}

/**
 * A Mosquitto of its own on a free loopback port, with its own persistence directory, for
 * tests that stop and restart the broker (the machine's shared one on 1883 is never touched).
 * Defaults: anonymous clients, persistence on, `max_queued_messages 0` (no limit: with
 * Mosquitto's default of 1000 it drops QoS 1 messages it already acknowledged to their
 * publisher once a persistent session's queue is full). Killed when the test process exits.
 */
export async function startPrivateMosquitto(dir: string, extraConfig = ''): Promise<PrivateMosquitto> {
  const [port] = (await freePorts(1)) as [number];
  const conf = join(dir, 'mosquitto.conf');
  const logFile = join(dir, 'mosquitto.log');
  writeFileSync(
    conf,
    `${[
      `listener ${port} 127.0.0.1`,
      'allow_anonymous true',
      // Running as root, Mosquitto would switch to the `mosquitto` user, who cannot write here.
      ...(process.getuid?.() === 0 ? ['user root'] : []),
      'persistence true',
      `persistence_location ${dir}/`,
      'max_queued_messages 0',
      `log_dest file ${logFile}`,
      'log_type all',
      'log_timestamp_format %H:%M:%S',
      extraConfig,
    ].join('\n')}\n`,
  );
  let child: ChildProcess | undefined;
  const kill = () => child?.kill('SIGKILL');
  process.on('exit', kill);

  const start = async () => {
    const proc = spawn('mosquitto', ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
    child = proc;
    let stderr = '';
    proc.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
    const exited = once(proc, 'exit');
    for (let i = 0; i < 100; i++) {
      if (await canConnect({ host: '127.0.0.1', port }, 500)) return;
      if (proc.exitCode !== null) break;
      await sleep(100);
    }
    proc.kill('SIGKILL');
    await exited;
    throw new Error(`mosquitto did not start on port ${port}: ${stderr}\n${tail(logFile)}`);
  };
  await start();

  return {
    url: `mqtt://127.0.0.1:${port}`,
    port,
    dir,
    start,
    stop: async (signal = 'SIGTERM') => {
      const proc = child;
      if (proc === undefined || proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = once(proc, 'exit');
      proc.kill(signal);
      await exited;
      if (proc === child) child = undefined;
    },
    log: () => tail(logFile, Infinity),
  };
}

function tail(file: string, lines = 30): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}
