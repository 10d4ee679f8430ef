// The Redis rate limiter's cost on ingest: QoS 1 messages from 50 devices through `ferry run`
// with the history bridge, once with a `rateLimit` that limits nothing (1,000,000 messages/s
// per device, in the Redis at FERRY_TEST_REDIS or 127.0.0.1:6379) and once without one, in
// turns, median of three rounds. Goal: ≥ 0.85× with the limiter on.
import { ackedRate } from './ingest.ts';
import { cpuMs } from './load.ts';
import { startFerryTarget } from './targets.ts';
import { median } from './stats.ts';

const ROUNDS = 3;

export interface RateLimitBenchResult {
  readonly messages: number;
  readonly rounds: number;
  readonly redis: string;
  readonly off: number;
  readonly on: number;
  readonly ratio: number;
  /** The gateway's CPU time per 1,000 messages (median), a measure this busy machine disturbs less than a rate. */
  readonly cpuMsPer1k: { readonly on: number; readonly off: number; readonly ratio: number };
}

function bridge(limited: boolean, redis: string): string {
  return [
    'name: bench-history',
    'from: { mqtt: { topics: ["devices/+/telemetry/#"] } }',
    'to: [{ history: { keep: 1000000 } }]',
    ...(limited ? [`rateLimit: { redis: "${redis}", messagesPerSecond: 1000000, keyPrefix: "ferry:bench:${process.pid}:" }`] : []),
    '',
  ].join('\n');
}

export async function benchRateLimit(messages = 50_000, nodeArgs: readonly string[] = []): Promise<RateLimitBenchResult> {
  const redis = process.env['FERRY_TEST_REDIS'] ?? 'redis://127.0.0.1:6379';
  const rates = { on: [] as number[], off: [] as number[] };
  const cpu = { on: [] as number[], off: [] as number[] };
  for (let round = 0; round < ROUNDS; round++) {
    for (const limited of [true, false]) {
      const target = await startFerryTarget({ bridge: bridge(limited, redis), nodeArgs });
      try {
        await ackedRate(target.url, 1, Math.min(5_000, messages));
        const before = cpuMs(target.pid);
        rates[limited ? 'on' : 'off'].push(await ackedRate(target.url, 1, messages));
        cpu[limited ? 'on' : 'off'].push(((cpuMs(target.pid) - before) * 1000) / messages);
      } finally {
        await target.stop();
      }
    }
  }
  const on = median(rates.on);
  const off = median(rates.off);
  const round2 = (n: number) => Math.round(n * 100) / 100;
  const cpuOn = median(cpu.on);
  const cpuOff = median(cpu.off);
  return {
    messages,
    rounds: ROUNDS,
    redis: redis.replace(/\/\/[^@/]*@/, '//***@'),
    on,
    off,
    ratio: round2(on / off),
    cpuMsPer1k: { on: round2(cpuOn), off: round2(cpuOff), ratio: round2(cpuOn / cpuOff) },
  };
}
