// The brokers the ingest benchmark publishes to, each in a child process of its own:
// the Ferry gateway (`ferry run`), plain aedes, and Mosquitto.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

export interface Target {
  readonly url: string;
  stop(): Promise<void>;
}

const ROOT = fileURLToPath(new URL('..', import.meta.url));

export interface FerryTargetOptions {
  /** The one bridge file's text; the history bridge on devices/+/telemetry/# when absent; `null` for no bridge at all. */
  readonly bridge?: string | null;
  /** Options for the gateway's node, before the script (e.g. --cpu-prof). */
  readonly nodeArgs?: readonly string[];
  /** The bridge file's name in the bridges directory: `bridge.ts` for a TypeScript bridge. */
  readonly bridgeFile?: string;
  /** Every line the gateway writes to stdout (its log, and --trace-gc lines). */
  readonly onLine?: (line: string) => void;
  /** The `telemetry:` section as flow YAML; export and the eBPF collector off when absent. */
  readonly telemetry?: string;
  /** `mqtt.persistence`: where the broker keeps its state (sqlite, the default, or memory). */
  readonly persistence?: 'sqlite' | 'memory';
  /** `buffer.commitDelayMs` (0, the default, when absent). */
  readonly commitDelayMs?: number;
}

/** `ferry run` with one bridge (the history bridge by default), synchronous=full, anonymous on loopback. */
/** The devices' telemetry into the history (`history` is its settings, as YAML). */
export function historyBridge(history: string): string {
  return ['name: bench-history', 'from: { mqtt: { topics: ["devices/+/telemetry/#"] } }', `to: [{ history: ${history} }]`, ''].join('\n');
}

/** The devices' telemetry to one Kafka topic, acks all. */
export function kafkaBridge(brokers: readonly string[], topic: string): string {
  return [
    'name: bench-kafka',
    'from: { mqtt: { topics: ["devices/+/telemetry/#"] } }',
    `to: [{ kafka: { brokers: "${brokers.join(',')}", topic: ${topic}, acks: all } }]`,
    '',
  ].join('\n');
}

export async function startFerryTarget(options: FerryTargetOptions = {}): Promise<Target & { readonly pid: number; readonly dataDir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-bench-'));
  writeFileSync(
    join(dir, 'gateway.yaml'),
    [
      'gateway: { name: bench, dataDir: ./data }',
      `mqtt: { host: 127.0.0.1, port: 0, allowAnonymous: loopback, persistence: ${options.persistence ?? 'sqlite'} }`,
      'admin: { port: 0 }',
      'log: { level: info, pretty: never }',
      `buffer: { synchronous: full, commitDelayMs: ${options.commitDelayMs ?? 0} }`,
      `telemetry: ${options.telemetry ?? '{ ebpf: off }'}`,
      `bridges: [${options.bridge === null ? '' : (options.bridgeFile ?? 'bridge.yaml')}]`,
      'devices: []',
      '',
    ].join('\n'),
  );
  if (options.bridge !== null) writeFileSync(join(dir, options.bridgeFile ?? 'bridge.yaml'), options.bridge ?? historyBridge('{ keep: 1000000 }'));
  const args = [...(options.nodeArgs ?? []), join(ROOT, 'bin/ferry.js'), 'run', '--config', join(dir, 'gateway.yaml')];
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await readFirst(child, (line) => {
    options.onLine?.(line);
    if (!line.includes('accepting MQTT connections')) return undefined;
    return Number(
      String((JSON.parse(line) as { mqtt: unknown }).mqtt)
        .split(':')
        .pop(),
    );
  });
  return {
    url: `mqtt://127.0.0.1:${port}`,
    pid: child.pid as number,
    dataDir: join(dir, 'data'),
    stop: () => stopChild(child, () => rmSync(dir, { recursive: true, force: true })),
  };
}

/** A TypeScript script of bench/ in its own process, ready when it prints `ready`. */
export async function startScript(script: string, args: readonly string[]): Promise<{ readonly pid: number; stop(): Promise<void> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'bench', script), ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  await readFirst(child, (line) => (line === 'ready' ? 0 : undefined));
  return { pid: child.pid as number, stop: () => stopChild(child, () => {}) };
}

export async function startAedesTarget(): Promise<Target & { readonly pid: number }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'bench/aedes-broker.ts'), '0'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await readFirst(child, (line) => (line.startsWith('port ') ? Number(line.slice(5)) : undefined));
  return { url: `mqtt://127.0.0.1:${port}`, pid: child.pid as number, stop: () => stopChild(child, () => {}) };
}

/**
 * `mosquitto -c` on a free loopback port; undefined when mosquitto is not installed.
 * `settings` replace or add to the defaults below (`max_inflight_messages: '20'`...).
 */
export async function startMosquittoTarget(settings: Readonly<Record<string, string>> = {}): Promise<Target | undefined> {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-bench-mosquitto-'));
  const port = await freePort();
  const conf = join(dir, 'mosquitto.conf');
  const options = {
    allow_anonymous: 'true',
    persistence: 'false',
    max_queued_messages: '100000',
    max_inflight_messages: '0',
    set_tcp_nodelay: 'true',
    log_dest: 'stderr',
    log_type: 'error',
    ...settings,
  };
  writeFileSync(conf, [`listener ${port} 127.0.0.1`, ...Object.entries(options).map(([key, value]) => `${key} ${value}`), ''].join('\n'));
  const child = spawn('mosquitto', ['-c', conf], { stdio: ['ignore', 'ignore', 'inherit'] });
  const missing = new Promise<boolean>((resolve) => child.once('error', () => resolve(true)));
  for (let i = 0; i < 50; i++) {
    if (await Promise.race([missing, sleep(100).then(() => false)])) {
      rmSync(dir, { recursive: true, force: true });
      return undefined;
    }
    if (await canConnect(port)) return { url: `mqtt://127.0.0.1:${port}`, stop: () => stopChild(child, () => rmSync(dir, { recursive: true, force: true })) };
  }
  await stopChild(child, () => rmSync(dir, { recursive: true, force: true }));
  throw new Error(`mosquitto did not listen on ${port} within 5 s`);
}

/** The first number `parse` finds in a line `child` writes to stdout; rejects with `exited(code)` when the child exits first. */
export function readFirst(
  child: ChildProcess,
  parse: (line: string) => number | undefined,
  exited = (code: number | null) => `broker exited with ${code} before it was ready`,
): Promise<number> {
  let pending = '';
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(exited(code))));
    child.stdout?.on('data', (chunk: Buffer) => {
      pending += chunk.toString();
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) {
        const port = parse(line);
        if (port !== undefined) resolve(port);
      }
    });
  });
}

/** Stops a child with SIGTERM (SIGKILL after 15 s) and waits for it to exit, unless it has; then `cleanup`. */
export async function stopChild(child: ChildProcess, cleanup: () => void = () => {}): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(timer);
  }
  cleanup();
}

async function freePort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
  });
}
