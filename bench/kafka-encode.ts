// kafkajs' encoding of produce requests, the way the Kafka sink's batches go out (v3 produce
// request, record batch v2 with its CRC32C, headers as the sink sets them), with Ferry's kafkajs
// patches (src/kafka/kafkajs-patches.ts) and with kafkajs' own code: CPU time per MiB of payload
// at each payload size. Each variant runs in a process of its own (the patches replace modules
// for the whole process), alternating, several rounds; medians. No broker: only the encoding.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { median } from './stats.ts';

const SIZES = [200, 2_048, 16_384] as const;
/** Records per produce request (the sink's default batch is 500 messages or 512 KiB, whichever comes first). */
const batchFor = (bytes: number) => Math.max(1, Math.min(500, Math.floor((512 * 1024) / bytes)));

export interface KafkaEncodeResult {
  /** By payload size: CPU ms per MiB of payload encoded, patched and kafkajs' own, and their ratio. */
  readonly sizes: readonly { readonly payloadBytes: number; readonly patchedMsPerMiB: number; readonly originalMsPerMiB: number; readonly ratio: number }[];
}

/** In a child process: encodes `mib` MiB of payload per size, prints CPU ms per MiB as JSON. */
async function child(patched: boolean, mib: number): Promise<void> {
  if (patched) (await import('../src/kafka/kafkajs-patches.ts')).patchKafkajs();
  const require = createRequire(import.meta.url);
  const produce = require('kafkajs/src/protocol/requests/produce/v3/request.js') as (args: unknown) => { encode(): Promise<unknown> };
  const frame = require('kafkajs/src/protocol/request.js') as (args: unknown) => Promise<{ buffer: Buffer }>;
  const out: Record<number, number> = {};
  for (const bytes of SIZES) {
    const messages = Array.from({ length: batchFor(bytes) }, (_, i) => ({
      key: `device-${i % 50}`,
      value: Buffer.alloc(bytes, i % 251),
      headers: { 'ferry-id': '0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b', 'mqtt-topic': `devices/device-${i % 50}/telemetry/bench` },
    }));
    const request = produce({ acks: -1, timeout: 30_000, topicData: [{ topic: 'bench', partitions: [{ partition: 0, firstSequence: 0, messages }] }] });
    const encodeOnce = () => frame({ correlationId: 1, clientId: 'ferry', request });
    const perRequest = messages.length * bytes;
    const requests = Math.max(20, Math.round((mib * 1024 * 1024) / perRequest));
    for (let i = 0; i < 10; i++) await encodeOnce();
    const start = process.cpuUsage();
    for (let i = 0; i < requests; i++) await encodeOnce();
    const used = process.cpuUsage(start);
    out[bytes] = (used.user + used.system) / 1000 / ((requests * perRequest) / (1024 * 1024));
  }
  process.stdout.write(JSON.stringify(out));
}

export function benchKafkaEncode(options: { readonly rounds: number; readonly mib: number }): KafkaEncodeResult {
  const self = fileURLToPath(import.meta.url);
  const runs: Record<'patched' | 'original', Record<number, number>[]> = { patched: [], original: [] };
  for (let round = 0; round < options.rounds; round++) {
    for (const variant of ['patched', 'original'] as const) {
      const run = spawnSync(process.execPath, ['--import', 'tsx', self, 'child', variant, String(options.mib)], { encoding: 'utf8' });
      if (run.status !== 0) throw new Error(`kafka encode bench (${variant}) failed: ${run.stderr}`);
      runs[variant].push(JSON.parse(run.stdout) as Record<number, number>);
    }
  }
  const round2 = (n: number) => Math.round(n * 100) / 100;
  return {
    sizes: SIZES.map((payloadBytes) => {
      const patchedMsPerMiB = median(runs.patched.map((r) => r[payloadBytes] as number));
      const originalMsPerMiB = median(runs.original.map((r) => r[payloadBytes] as number));
      return { payloadBytes, patchedMsPerMiB: round2(patchedMsPerMiB), originalMsPerMiB: round2(originalMsPerMiB), ratio: round2(patchedMsPerMiB / originalMsPerMiB) };
    }),
  };
}

if (process.argv[2] === 'child') await child(process.argv[3] === 'patched', Number(process.argv[4]));
