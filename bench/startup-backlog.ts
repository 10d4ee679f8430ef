// Start to accepting connections with a backlog in the buffer: a gateway with one bridge whose
// Kafka is unreachable, started in turn with an empty data directory and with one whose buffer
// holds `messages` messages of 200 bytes for that bridge (stopped cleanly before, as after an
// upgrade or a reboot), each start stopped with SIGTERM. With FERRY_BENCH_DROP_CACHES=1 (root
// only) the kernel's page cache is emptied before each start with the backlog, as after a power
// cycle; else the buffer is read from the page cache. A last start with the backlog runs until
// the integrity check that follows a start (in the background) has passed: its duration is how
// long the QoS 1 and 2 messages of that start wait for their PUBACKs.
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { DEFER_CHECK_ABOVE_BYTES, bufferPath, openBuffer } from '../src/buffer/open.ts';
import { createEnvelope } from '../src/core/envelope.ts';
import { type Spread, readLogged, spawnRun, spread, startOnce } from './startup.ts';
import { stopChild } from './targets.ts';

export interface StartupBacklogResult {
  readonly messages: number;
  readonly bufferMb: number;
  readonly rounds: number;
  /** Whether the page cache was emptied before each start with the backlog. */
  readonly cold: boolean;
  readonly empty: Spread;
  readonly withBacklog: Spread;
  /**
   * The background integrity check of the backlog's buffer in one more start, ms (as the gateway
   * logs it); null for a buffer the start checks before it listens (up to DEFER_CHECK_ABOVE_BYTES).
   */
  readonly checkMs: number | null;
}

const BRIDGE = 'backlog';

export async function benchStartupBacklog(messages: number, rounds: number, log: (line: string) => void): Promise<StartupBacklogResult> {
  const cold = process.env['FERRY_BENCH_DROP_CACHES'] === '1';
  const root = mkdtempSync(join(tmpdir(), 'ferry-bench-backlog-'));
  try {
    const config = join(root, 'gateway.yaml');
    writeFileSync(
      config,
      [
        'gateway: { name: bench, dataDir: ./data }',
        'admin: { enabled: false }',
        'shutdown: { drainTimeoutMs: 200 }',
        'telemetry: { ebpf: off }',
        'bridges: [bridge.yaml]',
        'devices: []',
        '',
      ].join('\n'),
    );
    writeFileSync(
      join(root, 'bridge.yaml'),
      [`name: ${BRIDGE}`, 'from: { mqtt: { topics: ["devices/#"] } }', 'to: [{ kafka: { brokers: "127.0.0.1:1", topic: backlog } }]', ''].join('\n'),
    );
    const backlog = join(root, 'backlog');
    fillBuffer(backlog, messages);
    const bufferMb = Math.round(statSync(bufferPath(backlog)).size / 1024 / 102.4) / 10;
    log(`  a buffer of ${messages.toLocaleString('en-US')} messages, ${bufferMb} MB${cold ? ', the page cache emptied before each start' : ''}`);
    const empty: number[] = [];
    const withBacklog: number[] = [];
    for (let i = 0; i < rounds; i++) {
      const fresh = join(root, `empty-${i}`);
      mkdirSync(fresh);
      empty.push((await startOnce({}, 0, config, [], fresh)).startupMs);
      if (cold) writeFileSync('/proc/sys/vm/drop_caches', '3');
      withBacklog.push((await startOnce({}, 0, config, [], backlog)).startupMs);
      // A clean stop removes the WAL: the next start is one after a clean stop too.
      if (existsSync(`${bufferPath(backlog)}-wal`) && statSync(`${bufferPath(backlog)}-wal`).size > 0)
        throw new Error('the gateway left a WAL with frames behind: its stop was not clean');
    }
    let checkMs: number | null = null;
    if (statSync(bufferPath(backlog)).size > DEFER_CHECK_ABOVE_BYTES) {
      if (cold) writeFileSync('/proc/sys/vm/drop_caches', '3');
      checkMs = await backgroundCheckMs(config, backlog);
    }
    return { messages, bufferMb, rounds, cold, empty: spread(empty), withBacklog: spread(withBacklog), checkMs };
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

/** Starts `ferry run` on `dataDir` and waits for its background integrity check to pass; the check's ms, as logged. */
async function backgroundCheckMs(config: string, dataDir: string): Promise<number> {
  const child = spawnRun(config, dataDir);
  try {
    return await readLogged(child, 'buffer: integrity checked in the background', 'ms');
  } finally {
    await stopChild(child);
  }
}

/** A buffer holding `messages` messages of `payloadBytes` for `bridge` (the bench's), closed cleanly. */
export function fillBuffer(dataDir: string, messages: number, bridge = BRIDGE, payloadBytes = 200): void {
  const { store } = openBuffer(dataDir, pino({ level: 'silent' }));
  const payload = Buffer.alloc(payloadBytes, 0x61);
  const origin = { source: 'mqtt', qos: 1, retain: false, clientId: 'bench-1' } as const;
  const timestamp = Date.now();
  // In commits of 1,024, as a flood fills it.
  store.writeTransaction(() => {
    for (let from = 0; from < messages; from += 1024) {
      store.append(
        Array.from({ length: Math.min(1024, messages - from) }, (_, k) => {
          const i = from + k;
          return {
            bridge,
            envelope: createEnvelope({
              id: `00000000-0000-7000-8000-${String(i).padStart(12, '0')}`,
              topic: `devices/bench-${i % 50}/telemetry/bench`,
              payload,
              origin,
              timestamp,
            }),
          };
        }),
      );
    }
  });
  store.close();
}
