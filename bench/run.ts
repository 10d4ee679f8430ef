// `npm run bench [-- <scenario>...] [--out <file>] [--profile <dir>]`: runs the benchmarks
// (all, or the scenarios named: buffer, guard, ingest, e2e, state) in one process, prints a table of
// ratios measured in this run, and writes the results as JSON (bench/results.json unless
// --out). Absolute rates depend on the machine; the ratios against a baseline measured
// alongside are what to compare. --profile writes a CPU profile of the gateway under the
// end-to-end load to <dir> (node --cpu-prof).
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { type BrokerStateBenchResult, benchBrokerState } from './broker-state.ts';
import { type BufferBenchResult, benchBuffer } from './buffer.ts';
import { type E2eBenchResult, benchE2e } from './e2e.ts';
import { type HandlerBenchResult, benchHandler } from './handler.ts';
import { type IngestBenchResult, benchIngest } from './ingest.ts';
import { benchPacketGuard } from './packet-guard.ts';

const SCENARIOS = ['buffer', 'guard', 'ingest', 'e2e', 'handler', 'state'] as const;
type Scenario = (typeof SCENARIOS)[number];

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { only: { type: 'string', multiple: true }, out: { type: 'string' }, profile: { type: 'string' } },
});
const named = [...positionals, ...(values.only ?? []).flatMap((s) => s.split(','))];
const unknown = named.filter((s) => !(SCENARIOS as readonly string[]).includes(s));
if (unknown.length > 0) {
  process.stderr.write(`unknown scenario ${unknown.join(', ')}: choose from ${SCENARIOS.join(', ')}\n`);
  process.exit(2);
}
const selected = new Set<Scenario>(named.length === 0 ? SCENARIOS : (named as Scenario[]));
const log = (line: string) => process.stderr.write(`${line}\n`);

type Row = readonly [what: string, ferry: number, baseline: string, baselineRate: number, ratio: number];
const rows: Row[] = [];
const results: {
  buffer?: BufferBenchResult;
  packetGuard?: { plain: number; guarded: number; ratio: number };
  ingest?: IngestBenchResult;
  e2e?: E2eBenchResult;
  handler?: HandlerBenchResult;
  brokerState?: BrokerStateBenchResult;
} = {};

if (selected.has('buffer')) {
  const messages = Number(process.env['FERRY_BENCH_MESSAGES'] ?? 100_000);
  log(`durable buffer: ${messages} messages of 200 bytes, synchronous=FULL...`);
  const buffer = (results.buffer = await benchBuffer(messages));
  rows.push(
    ['durable enqueue (group commit, FULL), msgs/s', buffer.enqueue.ferry, 'raw better-sqlite3 insert, 1,000 rows/txn', buffer.enqueue.raw, buffer.enqueue.ratio],
    ['drain to a null sink (cursor, commit, delete), msgs/s', buffer.drain.ferry, 'raw select batch + delete', buffer.drain.raw, buffer.drain.ratio],
  );
}
if (selected.has('guard')) {
  log('packet-size guard: QoS 0 through aedes with and without it...');
  const guard = (results.packetGuard = await benchPacketGuard());
  rows.push([
    'MQTT QoS 0 through aedes with the packet-size guard, msgs/s',
    Math.round(guard.guarded),
    'the same without the guard',
    Math.round(guard.plain),
    Math.round(guard.ratio * 100) / 100,
  ]);
}
if (selected.has('ingest')) {
  const messages = Number(process.env['FERRY_BENCH_INGEST_MESSAGES'] ?? 50_000);
  log(`MQTT ingest: ${messages} messages (QoS 0: four times as many) of 200 bytes from 50 devices into Ferry, aedes and Mosquitto, median of 3 rounds...`);
  const ingest = (results.ingest = await benchIngest(messages));
  rows.push(['QoS 1 ingest, 50 devices, acked at the publishers, msgs/s', ingest.qos1.ferry, 'plain aedes, no hooks', ingest.qos1.aedes, ingest.qos1.ferryVsAedes]);
  if (ingest.qos1.mosquitto !== null && ingest.qos1.ferryVsMosquitto !== null) {
    rows.push(['QoS 1 ingest, 50 devices, acked at the publishers, msgs/s', ingest.qos1.ferry, 'Mosquitto 2 (in memory)', ingest.qos1.mosquitto, ingest.qos1.ferryVsMosquitto]);
  }
  rows.push(['QoS 0 ingest, 50 devices, handled (QoS 1 fence), msgs/s', ingest.qos0.ferry, 'plain aedes, no hooks', ingest.qos0.aedes, ingest.qos0.ferryVsAedes]);
  rows.push(
    ['broker hardening alone (no bridge), QoS 1 ingest, msgs/s', ingest.hardening.qos1, 'plain aedes, no hooks', ingest.qos1.aedes, ingest.hardening.qos1VsAedes],
    ['broker hardening alone (no bridge), QoS 0 ingest, msgs/s', ingest.hardening.qos0, 'plain aedes, no hooks', ingest.qos0.aedes, ingest.hardening.qos0VsAedes],
  );
}
if (selected.has('e2e')) {
  const messages = Number(process.env['FERRY_BENCH_E2E_MESSAGES'] ?? 100_000);
  const naiveMessages = Number(process.env['FERRY_BENCH_NAIVE_MESSAGES'] ?? Math.min(messages, 10_000));
  log(`end to end: ${messages} QoS 1 messages of 200 bytes from 50 devices through the gateway to Kafka...`);
  const e2e = (results.e2e = await benchE2e({ messages, naiveMessages, log, ...(values.profile === undefined ? {} : { profileDir: resolve(values.profile) }) }));
  const what = 'QoS 1 devices to Kafka (acks=all), in Kafka, msgs/s';
  rows.push(
    [what, e2e.ferry.perSec, 'naive bridge: aedes + one awaited kafkajs send per message', e2e.naive.perSec, e2e.ratios.vsNaive],
    [what, e2e.ferry.perSec, 'plain aedes QoS 1 ingest (nothing stored or forwarded)', e2e.aedesIngest.perSec, e2e.ratios.vsAedesIngest],
    [what, e2e.ferry.perSec, 'Kafka ProducerPerformance, acks=all', e2e.kafkaCeiling.perSec, e2e.ratios.vsKafkaCeiling],
    [`${what} (goal ≥ 0.9)`, e2e.ferry.perSec, 'the same gateway, mqtt.persistence: memory', e2e.ferryMemoryState.perSec, e2e.ratios.sqliteVsMemoryState],
  );
}
if (selected.has('handler')) {
  const messages = Number(process.env['FERRY_BENCH_HANDLER_MESSAGES'] ?? 50_000);
  log(`custom handler vs YAML bridge: ${messages} QoS 1 messages from 20 devices to Kafka, each through a gateway of its own...`);
  const handler = (results.handler = await benchHandler(messages, log));
  rows.push([
    'TypeScript bridge (map to Kafka): gateway CPU ms per 1,000 messages (goal ≤ 1.3× YAML)',
    handler.handler.cpuMsPer1k,
    'the equivalent YAML bridge',
    handler.yaml.cpuMsPer1k,
    handler.cpuRatio,
  ]);
  log(
    `  forced full GCs per second under load: handler ${handler.handler.gc.forcedPerSec} (goal ≤ 0.1), YAML ${handler.yaml.gc.forcedPerSec}; ` +
      `GC pause p99 / max: handler ${handler.handler.gc.pauseP99Ms} / ${handler.handler.gc.pauseMaxMs} ms, YAML ${handler.yaml.gc.pauseP99Ms} / ${handler.yaml.gc.pauseMaxMs} ms`,
  );
}
if (selected.has('state')) {
  log(
    'broker state (SQLite, FULL, against memory; median of 3): QoS 1 ingest through ferry run, QoS 1 publishes queued for 100 offline sessions, a 3,000-message queue sent on reconnect, subscribe and retained churn; startup with 10,000 saved sessions and 100,000 retained messages...',
  );
  const state = (results.brokerState = await benchBrokerState());
  const memory = 'the same, mqtt.persistence: memory';
  rows.push(
    ['QoS 1 ingest through ferry run (history bridge), 50 devices, msgs/s (goal ≥ 0.9)', state.ingest.sqlite, memory, state.ingest.memory, state.ingest.ratio],
    ['QoS 1 publishes each queued for 100 offline persistent sessions, msgs/s', state.fanOut.sqlite, memory, state.fanOut.memory, state.fanOut.ratio],
    ["a reconnecting session's queue of 3,000 QoS 1 messages sent, msgs/s", state.drain.sqlite, memory, state.drain.memory, state.drain.ratio],
    ['SUBSCRIBE + UNSUBSCRIBE of a persistent session, 20 in flight, pairs/s', state.subscribeChurn.sqlite, memory, state.subscribeChurn.memory, state.subscribeChurn.ratio],
    ['QoS 1 retained publishes over 500 topics, 20 in flight, msgs/s', state.retainedChurn.sqlite, memory, state.retainedChurn.memory, state.retainedChurn.ratio],
  );
}

const number = (n: number) => n.toLocaleString('en');
const table = [
  '| measure | Ferry | baseline | baseline rate | ratio |',
  '|---|---:|---|---:|---:|',
  ...rows.map(([what, ferry, base, baseRate, ratio]) => `| ${what} | ${number(ferry)} | ${base} | ${number(baseRate)} | ${ratio} |`),
].join('\n');
process.stdout.write(`${table}\n`);
if (results.e2e !== undefined) {
  const { ferry, naive, kafkaCeiling } = results.e2e;
  const line = (name: string, p: { perSec: number; latencyMs: { p50: number; p99: number } }, rss: string, cpu: string, extra: string) =>
    `| ${name} | ${number(p.perSec)} | ${p.latencyMs.p50} | ${p.latencyMs.p99} | ${rss} | ${cpu} | ${extra} |`;
  process.stdout.write(
    [
      '',
      '| end to end | msgs/s in Kafka | p50 ms | p99 ms | peak RSS MB | CPU ms / 1,000 msgs | delivered / missing / duplicates |',
      '|---|---:|---:|---:|---:|---:|---|',
      line('Ferry gateway (FULL buffer)', ferry, String(ferry.peakRssMb), String(ferry.cpuMsPer1k), `${number(ferry.delivered)} / ${ferry.missing} / ${ferry.duplicates}`),
      line('naive bridge', naive, `${naive.peakRssMb} (bridge)`, `${naive.cpuMsPer1k} (aedes + bridge)`, `${number(naive.delivered)} / ${naive.missing} / ${naive.duplicates}`),
      line(
        'Kafka ProducerPerformance',
        { perSec: kafkaCeiling.perSec, latencyMs: { p50: kafkaCeiling.p50Ms, p99: kafkaCeiling.p99Ms } },
        '-',
        '-',
        `${number(kafkaCeiling.records)} sent`,
      ),
      '',
    ].join('\n'),
  );
}
if (results.brokerState !== undefined) {
  const { startup } = results.brokerState;
  process.stdout.write(
    `\nbroker startup with ${number(startup.savedSessions)} saved sessions (2 subscriptions and 1 queued message each) and ${number(startup.retained)} retained messages: ${number(startup.ms)} ms (empty, state in memory: ${number(startup.emptyMs)} ms)\n`,
  );
}
const out = resolve(values.out ?? new URL('./results.json', import.meta.url).pathname);
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, `${JSON.stringify({ at: new Date().toISOString(), node: process.version, ...results }, null, 2)}\n`);
log(`results written to ${out}`);
