// `npm run bench [-- <scenario>...] [--out <file>] [--profile <dir>]`: runs the benchmarks
// (all, or the scenarios named; `--help` lists them, bench/usage.ts) in one process, prints a table of
// ratios measured in this run, and writes the results as JSON (bench/results.json unless
// --out). Absolute rates depend on the machine; the ratios against a baseline measured
// alongside are what to compare. --profile writes CPU profiles of the gateways under the
// end-to-end, payload-size and external-broker loads to <dir> (node --cpu-prof).
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { type BrokerStateBenchResult, benchBrokerState } from './broker-state.ts';
import { type BufferBenchResult, benchBuffer } from './buffer.ts';
import { type PackingBenchResult, benchPacking } from './packing.ts';
import { type E2eBenchResult, benchE2e } from './e2e.ts';
import { EXTERNAL_PATHS, type ExternalBenchResult, benchExternal } from './external.ts';
import { type HandlerBenchResult, benchHandler } from './handler.ts';
import { type IdleDevicesResult, PER_CONNECTION_GOAL_KB, benchIdleDevices } from './idle-devices.ts';
import { type IngestBenchResult, benchIngest } from './ingest.ts';
import { benchPacketGuard } from './packet-guard.ts';
import { type KafkaClientsResult, benchKafkaClients } from './kafka-clients.ts';
import { type KafkaEncodeResult, benchKafkaEncode } from './kafka-encode.ts';
import { type PayloadBenchResult, benchPayloads } from './payloads.ts';
import { type PostgresBenchResult, benchPostgres } from './postgres.ts';
import { IDLE_RSS_GOAL_MB, STARTUP_GOAL_MS, type StartupBenchResult, benchStartup } from './startup.ts';
import { type StartupBacklogResult, benchStartupBacklog } from './startup-backlog.ts';
import { type DistantKafkaResult, benchDistantKafka } from './distant.ts';
import { type TelemetryBenchResult, benchTelemetry } from './telemetry.ts';
import { type RateLimitBenchResult, benchRateLimit } from './rate-limit.ts';
import { type SteadyBenchResult, benchSteady } from './steady.ts';
import { ratio } from './stats.ts';
import { SCENARIOS, type Scenario, usage } from './usage.ts';

const parsed = (() => {
  try {
    return parseArgs({
      allowPositionals: true,
      options: { only: { type: 'string', multiple: true }, out: { type: 'string' }, profile: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    });
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\nnpm run bench -- --help lists the scenarios and options\n`);
    process.exit(2);
  }
})();
const { values, positionals } = parsed;
if (values.help === true) {
  process.stdout.write(usage());
  process.exit(0);
}
const named = [...positionals, ...(values.only ?? []).flatMap((s) => s.split(','))];
const unknown = named.filter((s) => !(SCENARIOS as readonly string[]).includes(s));
if (unknown.length > 0) {
  process.stderr.write(`unknown scenario ${unknown.join(', ')}: choose from ${SCENARIOS.join(', ')} (npm run bench -- --help says what each measures)\n`);
  process.exit(2);
}
const selected = new Set<Scenario>(named.length === 0 ? SCENARIOS : (named as Scenario[]));
const log = (line: string) => process.stderr.write(`${line}\n`);

type Row = readonly [what: string, ferry: number, baseline: string, baselineRate: number, ratio: number];
const rows: Row[] = [];
const number = (n: number) => n.toLocaleString('en');
/** Measures with an absolute goal: what, result, goal, met. */
type GoalRow = readonly [what: string, result: string, goal: string, met: boolean];
const goals: GoalRow[] = [];
/** Issue 11's goals for the gateway under load, each measured against a baseline of the same run. */
const E2E_VS_AEDES_GOAL = 0.8;
const E2E_CPU_GOAL_MS = 25;
const E2E_PEAK_RSS_GOAL_MB = 150;
const QOS0_VS_AEDES_GOAL = 0.5;
const results: {
  buffer?: BufferBenchResult;
  packing?: PackingBenchResult;
  packetGuard?: { plain: number; guarded: number; ratio: number };
  ingest?: IngestBenchResult;
  rateLimit?: RateLimitBenchResult;
  e2e?: E2eBenchResult;
  steady?: SteadyBenchResult;
  payloads?: PayloadBenchResult;
  kafkaEncode?: KafkaEncodeResult;
  idleDevices?: IdleDevicesResult;
  kafkaClients?: KafkaClientsResult;
  handler?: HandlerBenchResult;
  brokerState?: BrokerStateBenchResult;
  external?: ExternalBenchResult;
  postgres?: PostgresBenchResult;
  startup?: StartupBenchResult;
  startupBacklog?: StartupBacklogResult;
  distant?: DistantKafkaResult;
  telemetry?: TelemetryBenchResult;
} = {};

if (selected.has('buffer')) {
  const messages = Number(process.env['FERRY_BENCH_MESSAGES'] ?? 100_000);
  log(`durable buffer: ${messages} messages of 200 bytes, synchronous=FULL; buffer stats with a backlog...`);
  const backlog = Number(process.env['FERRY_BENCH_STATUS_BACKLOG'] ?? 1_000_000);
  const buffer = (results.buffer = await benchBuffer(messages, 200, backlog));
  rows.push(
    ['durable enqueue (group commit, FULL), msgs/s', buffer.enqueue.ferry, 'raw better-sqlite3 insert, 1,000 rows/txn', buffer.enqueue.raw, buffer.enqueue.ratio],
    ['drain to a null sink (cursor, commit, delete), msgs/s', buffer.drain.ferry, 'raw select batch + delete', buffer.drain.raw, buffer.drain.ratio],
    [
      `buffer stats for /api/status, ${backlog.toLocaleString('en-US')} messages behind a down sink, calls/s`,
      buffer.status.ferry,
      "counted from the packs' index on each call",
      buffer.status.raw,
      buffer.status.ratio,
    ],
  );
}
if (selected.has('packing')) {
  const messages = Number(process.env['FERRY_BENCH_PACKING_MESSAGES'] ?? 307_200);
  log(
    `packs: ${messages} messages of 200 bytes written as a row each (as before packs), by the buffer, and as a bare row per 1,024, read back and deleted, 3 alternating rounds...`,
  );
  const packing = (results.packing = benchPacking(messages));
  const perCpuSecond = (cost: { cpuUs: number }) => Math.round(1e6 / cost.cpuUs);
  const { write, readDelete } = packing;
  const rowsWrite = 'a row a message, as before packs (32 a statement)';
  const rowsRead = 'a row a message, as before packs';
  const against = (label: string, cost: { cpuUs: number }, baseline: string, base: { cpuUs: number }): Row => [
    label,
    perCpuSecond(cost),
    baseline,
    perCpuSecond(base),
    ratio(base.cpuUs, cost.cpuUs),
  ];
  rows.push(
    against("the buffer's packs, written, msgs per CPU second", write.buffer, rowsWrite, write.rows),
    against("the buffer's packs, read back by a sink and released, msgs per CPU second", readDelete.buffer, rowsRead, readDelete.rows),
    against('a bare row per commit, written, msgs per CPU second', write.bare, rowsWrite, write.rows),
    against('a bare row per commit, read back and deleted, msgs per CPU second', readDelete.bare, rowsRead, readDelete.rows),
  );
  log(
    `  wall µs a message: written ${write.rows.wallUs} (rows), ${write.buffer.wallUs} (the buffer), ${write.bare.wallUs} (bare); read and deleted ${readDelete.rows.wallUs}, ${readDelete.buffer.wallUs}, ${readDelete.bare.wallUs}; pages ${packing.pages.rows}, ${packing.pages.buffer}, ${packing.pages.bare}`,
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
  rows.push([
    "QoS 0 ingest per second of the gateway's main thread on a core (a core of its own), msgs",
    ingest.qos0OwnCore.ferry,
    "plain aedes, the same of aedes's main thread",
    ingest.qos0OwnCore.aedes,
    ingest.qos0OwnCore.ferryVsAedes,
  ]);
  goals.push([
    `QoS 0 ingest against plain aedes QoS 0 in the same run (${number(ingest.qos0.ferry)} against ${number(ingest.qos0.aedes)} msgs/s)`,
    String(ingest.qos0.ferryVsAedes),
    `≥ ${QOS0_VS_AEDES_GOAL}`,
    ingest.qos0.ferryVsAedes >= QOS0_VS_AEDES_GOAL,
  ]);
  rows.push([
    'QoS 0 into the history (first publish to the last row written), msgs/s',
    ingest.qos0IntoHistory,
    'the same gateway, handled',
    ingest.qos0.ferry,
    ratio(ingest.qos0IntoHistory, ingest.qos0.ferry),
  ]);
  rows.push([
    'QoS 0 into the history, CPU ms per 1,000 messages until kept (all threads; ratio: times as much)',
    ingest.qos0Cpu.ferry,
    'plain aedes, until handled',
    ingest.qos0Cpu.aedes,
    ingest.qos0Cpu.ferryVsAedes,
  ]);
  rows.push([
    `QoS 1 ingest, the history full at its default keep (${ingest.historyFull.prefill.toLocaleString('en-US')} messages first), msgs/s`,
    ingest.historyFull.qos1,
    'plain aedes, no hooks',
    ingest.qos1.aedes,
    ingest.historyFull.qos1VsAedes,
  ]);
  rows.push(
    ['broker hardening alone (no bridge), QoS 1 ingest, msgs/s', ingest.hardening.qos1, 'plain aedes, no hooks', ingest.qos1.aedes, ingest.hardening.qos1VsAedes],
    ['broker hardening alone (no bridge), QoS 0 ingest, msgs/s', ingest.hardening.qos0, 'plain aedes, no hooks', ingest.qos0.aedes, ingest.hardening.qos0VsAedes],
  );
}
if (selected.has('ratelimit')) {
  const messages = Number(process.env['FERRY_BENCH_INGEST_MESSAGES'] ?? 50_000);
  log(`rate limiter: ${messages} QoS 1 messages from 50 devices, with a Redis rate limit that limits nothing and without, median of 3 rounds...`);
  const limited = (results.rateLimit = await benchRateLimit(messages));
  rows.push([
    'QoS 1 ingest with a Redis rate limit of 1,000,000/s per device, msgs/s (goal ≥ 0.85×)',
    limited.on,
    'the same bridge without a rate limit',
    limited.off,
    limited.ratio,
  ]);
  log(`  gateway CPU ms per 1,000 messages: limiter on ${limited.cpuMsPer1k.on}, off ${limited.cpuMsPer1k.off} (ratio ${limited.cpuMsPer1k.ratio})`);
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
    [
      "end to end, msgs per second of the gateway's main thread on a core (a core of its own, median)",
      e2e.ownCore.ferry,
      "plain aedes QoS 1 ingest, the same of aedes's main thread",
      e2e.ownCore.aedes,
      e2e.ownCore.ratio,
    ],
  );
  const threads = (list: readonly { onCorePct: number; waitingPct: number }[]) => list.map((t) => `${t.onCorePct}% on a core, ${t.waitingPct}% waiting for one`).join('; ');
  log(`  main thread per round: the gateway ${threads(e2e.rounds.mainThread.ferry)}; plain aedes ${threads(e2e.rounds.mainThread.aedes)}`);
  const { rounds } = e2e;
  const { summary } = rounds;
  // Every round's messages must all be in Kafka.
  const missing = rounds.ferry.reduce((n, r) => n + r.missing, 0);
  const complete = missing === 0 ? '' : ` (${missing} missing over the rounds: not met)`;
  const spread = (values: readonly number[]) => `${values.length} alternating rounds: ${values.map((v) => number(v)).join(', ')}`;
  goals.push(
    [
      `end to end (QoS 1, buffer FULL, acks=all) against plain aedes QoS 1 ingest in the same run, medians (${number(e2e.ferry.perSec)} against ${number(e2e.aedesIngest.perSec)} msgs/s; ${spread(rounds.ferry.map((r) => r.perSec))} against ${rounds.aedes.map((v) => number(v)).join(', ')})${complete}`,
      String(e2e.ratios.vsAedesIngest),
      `≥ ${E2E_VS_AEDES_GOAL}`,
      e2e.ratios.vsAedesIngest >= E2E_VS_AEDES_GOAL && missing === 0,
    ],
    [
      `gateway CPU per 1,000 messages end to end, ms, median (${spread(rounds.ferry.map((r) => r.cpuMsPer1k))})`,
      String(summary.cpuMsPer1k),
      `≤ ${E2E_CPU_GOAL_MS}`,
      summary.cpuMsPer1k <= E2E_CPU_GOAL_MS,
    ],
    [
      `peak RSS of the gateway at end-to-end load, MB, the highest (${spread(rounds.ferry.map((r) => r.peakRssMb))})`,
      String(summary.peakRssMb),
      `< ${E2E_PEAK_RSS_GOAL_MB}`,
      summary.peakRssMb < E2E_PEAK_RSS_GOAL_MB,
    ],
  );
}
if (selected.has('steady')) {
  const rates = (process.env['FERRY_BENCH_STEADY_RATES'] ?? '500,2000,8000').split(',').map(Number);
  log(`steady load: QoS 1 messages of 200 bytes from 50 devices at ${rates.join(', ')} msgs/s (10 s each) through the gateway to Kafka, and into plain aedes...`);
  const steady = (results.steady = await benchSteady({ rates, log }));
  for (const rate of steady.rates) {
    rows.push([
      `gateway CPU ms per 1,000 messages at a steady ${rate.perSec.toLocaleString('en-US')} msgs/s to Kafka (${Math.round(rate.ferry.coreShare * 100)}% of a core; lower is better)`,
      rate.ferry.cpuMsPer1k,
      `plain aedes at the same rate, nothing stored (${Math.round(rate.aedes.coreShare * 100)}% of a core)`,
      rate.aedes.cpuMsPer1k,
      rate.ratio,
    ]);
    rows.push([
      `the same with buffer.commitDelayMs: 10 (${Math.round(rate.ferryDelayed.coreShare * 100)}% of a core)`,
      rate.ferryDelayed.cpuMsPer1k,
      'plain aedes at the same rate',
      rate.aedes.cpuMsPer1k,
      rate.delayedRatio,
    ]);
  }
}
if (selected.has('distant')) {
  const messages = Number(process.env['FERRY_BENCH_DISTANT_MESSAGES'] ?? 50_000);
  const rtts = (process.env['FERRY_BENCH_DISTANT_RTTS'] ?? '0,20,50').split(',').map(Number);
  log(
    `a Kafka far away: ${number(messages)} buffered messages drained into a Kafka ${rtts.join(', ')} ms away (round trip), with the defaults and with larger batches and window...`,
  );
  const distant = (results.distant = await benchDistantKafka(messages, rtts, log));
  for (const run of distant.runs) {
    rows.push([`backlog drained into a Kafka ${run.rttMs} ms away, ${distant.larger}, msgs/s`, run.larger, 'the sink and buffer defaults', run.defaults, run.largerVsDefaults]);
  }
  for (const run of distant.mqtt?.runs ?? []) {
    rows.push([
      `backlog drained into Mosquitto ${run.rttMs} ms away (mqttClient sink), ${distant.mqtt?.larger}, msgs/s`,
      run.larger,
      'the sink defaults',
      run.defaults,
      run.largerVsDefaults,
    ]);
  }
}
if (selected.has('payloads')) {
  const messages = Number(process.env['FERRY_BENCH_PAYLOAD_MESSAGES'] ?? 50_000);
  log(`payload sizes end to end: 200 B, 2 KiB and 16 KiB QoS 1 messages from 50 devices through the gateway to Kafka (${messages} of 200 B, fewer of the larger)...`);
  const payloads = (results.payloads = await benchPayloads({ messages, log, ...(values.profile === undefined ? {} : { profileDir: resolve(values.profile) }) }));
  for (const run of payloads.runs) {
    rows.push([
      `QoS 1 devices to Kafka, ${run.payloadBytes}-byte payloads, msgs/s in Kafka (${run.ferryMBPerSec} MB/s; p99 ${run.ferry.latencyMs.p99} ms; CPU ${run.ferry.cpuMsPer1k} ms / 1,000; peak RSS ${run.ferry.peakRssMb} MB)`,
      run.ferry.perSec,
      `plain aedes QoS 1 ingest of the same payloads`,
      run.aedesIngest,
      run.vsAedesIngest,
    ]);
  }
  goals.push([
    'payload sizes end to end (200 B, 2 KiB, 16 KiB): msgs/s and MB/s, every message in Kafka',
    payloads.runs.map((run) => `${number(run.ferry.perSec)} msgs/s, ${run.ferryMBPerSec} MB/s`).join('; '),
    'report all three',
    payloads.runs.length === 3 && payloads.runs.every((run) => run.ferry.missing === 0),
  ]);
  log("  kafkajs produce-request encoding with Ferry's patches and with its own code, 64 MiB of payload per size, 3 alternating rounds...");
  const encode = (results.kafkaEncode = benchKafkaEncode({ rounds: 3, mib: 64 }));
  for (const size of encode.sizes) {
    rows.push([
      `kafkajs produce-request encoding, ${size.payloadBytes}-byte records, CPU ms per MiB of payload (lower is better)`,
      size.patchedMsPerMiB,
      "kafkajs' own code",
      size.originalMsPerMiB,
      size.ratio,
    ]);
  }
}
if (selected.has('devices')) {
  const devices = Number(process.env['FERRY_BENCH_DEVICES'] ?? 10_000);
  log(`idle devices: ${devices} MQTT 3.1.1 devices connected (keep alive 60 s) and subscribed to their command topic, memory of the gateway before and after...`);
  const idle = (results.idleDevices = await benchIdleDevices({ devices, log }));
  goals.push([
    `memory per idle connected device beyond the base, ${idle.connected} of ${idle.devices} connected and subscribed, KiB of RSS (V8 heap in use: ${idle.heapPerConnectionKiB} KiB; RSS ${idle.rssMiB.idle} → ${idle.rssMiB.connected} MiB)`,
    String(idle.rssPerConnectionKiB),
    `< ${PER_CONNECTION_GOAL_KB}`,
    idle.rssPerConnectionKiB < PER_CONNECTION_GOAL_KB && idle.connected === idle.devices,
  ]);
}
if (selected.has('kafkaclient')) {
  const records = Number(process.env['FERRY_BENCH_KAFKA_CLIENT_RECORDS'] ?? 100_000);
  log(`Kafka clients: ${records} records of 200 bytes in batches of 500, acks all, 4 in flight, kafkajs (patched) against @platformatic/kafka, 3 alternating rounds...`);
  const clients = (results.kafkaClients = await benchKafkaClients({ records, rounds: 3, log }));
  rows.push(
    ['@platformatic/kafka producer, records/s acknowledged', clients.platformatic.perSec, "kafkajs 2.2.4 with Ferry's patches", clients.kafkajs.perSec, clients.ratios.perSec],
    [
      '@platformatic/kafka producer, CPU ms per 1,000 records (lower is better)',
      clients.platformatic.cpuMsPer1k,
      "kafkajs 2.2.4 with Ferry's patches",
      clients.kafkajs.cpuMsPer1k,
      clients.ratios.cpu,
    ],
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
    'broker state (SQLite, FULL, against memory; median of 3): QoS 1 ingest through ferry run, QoS 1 publishes queued for 100 offline sessions, a 3,000-message queue sent on reconnect (QoS 1, QoS 2), subscribe and retained churn; startup with 10,000 saved sessions and 100,000 retained messages...',
  );
  const state = (results.brokerState = await benchBrokerState());
  const memory = 'the same, mqtt.persistence: memory';
  rows.push(
    ['QoS 1 ingest through ferry run (history bridge), 50 devices, msgs/s (goal ≥ 0.9)', state.ingest.sqlite, memory, state.ingest.memory, state.ingest.ratio],
    ['QoS 1 publishes each queued for 100 offline persistent sessions, msgs/s', state.fanOut.sqlite, memory, state.fanOut.memory, state.fanOut.ratio],
    ["a reconnecting session's queue of 3,000 QoS 1 messages sent, msgs/s", state.drain.sqlite, memory, state.drain.memory, state.drain.ratio],
    ["a reconnecting session's queue of 3,000 QoS 2 messages sent, msgs/s", state.drainQos2.sqlite, memory, state.drainQos2.memory, state.drainQos2.ratio],
    ['SUBSCRIBE + UNSUBSCRIBE of a persistent session, 20 in flight, pairs/s', state.subscribeChurn.sqlite, memory, state.subscribeChurn.memory, state.subscribeChurn.ratio],
    ['QoS 1 retained publishes over 500 topics, 20 in flight, msgs/s', state.retainedChurn.sqlite, memory, state.retainedChurn.memory, state.retainedChurn.ratio],
  );
}
if (selected.has('external')) {
  const messages = Number(process.env['FERRY_BENCH_EXTERNAL_MESSAGES'] ?? 50_000);
  log(
    `external broker vs embedded: ${messages} QoS 1 messages of 200 bytes from 50 devices, into Ferry or through Mosquitto and Ferry's mqttClient source, to Kafka; 3 rounds, medians...`,
  );
  const external = (results.external = await benchExternal({ messages, log, ...(values.profile === undefined ? {} : { profileDir: resolve(values.profile) }) }));
  const base = 'embedded broker → Kafka, same devices and load';
  for (const [path, { what }] of Object.entries(EXTERNAL_PATHS) as [keyof typeof EXTERNAL_PATHS, { what: string }][]) {
    const vsEmbedded = external.ratios[path];
    const met = vsEmbedded >= external.goal ? 'met' : 'NOT met';
    rows.push([
      `Mosquitto → mqttClient source → Kafka, ${what}, in Kafka, msgs/s (goal ≥ ${external.goal}× embedded: ${met})`,
      external.external[path].perSec,
      base,
      external.embedded.perSec,
      vsEmbedded,
    ]);
  }
  const e = external.external;
  log(
    `  Mosquitto acknowledged the publishers at ${e.mqtt311.ackedPerSec} / ${e.mqtt311Inflight1000.ackedPerSec} / ${e.mqtt5.ackedPerSec} msgs/s; ` +
      `gateway CPU ms per 1,000 messages: embedded ${external.embedded.cpuMsPer1k}, external ${e.mqtt311.cpuMsPer1k} / ${e.mqtt311Inflight1000.cpuMsPer1k} / ${e.mqtt5.cpuMsPer1k}; ` +
      `p50 ms: embedded ${external.embedded.latencyMs.p50}, external ${e.mqtt311.latencyMs.p50} / ${e.mqtt311Inflight1000.latencyMs.p50} / ${e.mqtt5.latencyMs.p50}; ` +
      `missing: ${external.embedded.missing} / ${e.mqtt311.missing} / ${e.mqtt311Inflight1000.missing} / ${e.mqtt5.missing}`,
  );
}
if (selected.has('postgres')) {
  const pgRows = Number(process.env['FERRY_BENCH_PG_ROWS'] ?? 50_000);
  const e2eMessages = Number(process.env['FERRY_BENCH_PG_E2E_MESSAGES'] ?? 20_000);
  log('PostgreSQL: the postgres sink against a raw COPY of the same rows; devices to PostgreSQL end to end...');
  const postgres = (results.postgres = await benchPostgres({ rows: pgRows, e2eMessages, log }));
  rows.push(
    [
      `postgres sink, ${postgres.sink.rows} rows in batches of ${postgres.sink.batchSize}, ${postgres.sink.concurrency} in flight, rows/s, median of ${postgres.sink.rounds.length} alternating rounds (ratios ${postgres.sink.rounds.map((r) => r.ratio).join(', ')}; goal ≥ 0.7)`,
      postgres.sink.ferry,
      'raw COPY FROM STDIN of the same rows',
      postgres.sink.copy,
      postgres.sink.ratio,
    ],
    [
      `the sink's statement run bare, batch after batch of ${postgres.sink.batchSize} on one connection, each committed before the next is sent (no templates, conversion or acks; no pipelining): what a writer that waits for each commit reaches here, rows/s, median; against COPY ${postgres.sink.bareRatio}`,
      postgres.sink.ferry,
      'the bare statement',
      postgres.sink.bare,
      postgres.sink.ofBare,
    ],
    [
      `QoS 1 devices to PostgreSQL (ferry run, postgres bridge), rows/s; p50 / p99 ${postgres.e2e.latencyMs.p50} / ${postgres.e2e.latencyMs.p99} ms`,
      postgres.e2e.perSec,
      'PUBACKs per second at the devices',
      postgres.e2e.ackedPerSec,
      ratio(postgres.e2e.perSec, postgres.e2e.ackedPerSec),
    ],
  );
}
if (selected.has('startup')) {
  const rounds = Number(process.env['FERRY_BENCH_STARTUP_ROUNDS'] ?? 5);
  log(`startup and idle memory of the embedded default (config/gateway.yaml, no device): ${rounds} fresh processes of each build, alternating...`);
  const startup = (results.startup = await benchStartup({ rounds, log }));
  const measured = startup.compiled ?? startup.sources;
  const range = (s: { median: number; min: number; max: number }) => `${s.median} (${s.min}–${s.max})`;
  goals.push(
    [
      `process start to accepting MQTT connections, embedded default, ${startup.build}, ms, median (min–max)`,
      range(measured.startupMs),
      `< ${STARTUP_GOAL_MS}`,
      measured.startupMs.median < STARTUP_GOAL_MS,
    ],
    [
      `idle RSS after ${startup.idleMs / 1000} s, embedded default, ${startup.build}, MB (bare node: ${startup.bareNode.rssMb})`,
      range(measured.idleRssMb),
      `< ${IDLE_RSS_GOAL_MB}`,
      measured.idleRssMb.median < IDLE_RSS_GOAL_MB,
    ],
  );
  log(`  CPU used until ready: ${range(measured.cpuMs)} ms (${startup.build}); from sources ${range(startup.sources.cpuMs)} ms`);
  const { idle } = startup;
  // No ratio: plain aedes idle uses next to nothing (0.01 ms a second, or none), so the figures go
  // in the log and in results.json (startup.idle).
  log(
    `  idle, all threads: the gateway ${idle.gateway.cpuMsPerSec} CPU ms and ${idle.gateway.wakeupsPerSec} wake-ups a second, plain aedes ${idle.aedes.cpuMsPerSec} and ${idle.aedes.wakeupsPerSec}`,
  );
  if (startup.compiled !== null) {
    rows.push(
      [
        'startup to accepting MQTT connections, compiled (dist/), ms',
        startup.compiled.startupMs.median,
        'the same from the TypeScript sources',
        startup.sources.startupMs.median,
        ratio(startup.compiled.startupMs.median, startup.sources.startupMs.median),
      ],
      [
        'idle RSS, compiled (dist/), MB',
        startup.compiled.idleRssMb.median,
        'the same from the TypeScript sources',
        startup.sources.idleRssMb.median,
        ratio(startup.compiled.idleRssMb.median, startup.sources.idleRssMb.median),
      ],
    );
  }
  const backlogMessages = Number(process.env['FERRY_BENCH_STARTUP_BACKLOG'] ?? 1_000_000);
  log(
    `start with a backlog: ${backlogMessages.toLocaleString('en-US')} messages in the buffer of a bridge whose Kafka is down, stopped cleanly before, against an empty buffer, 3 alternating rounds...`,
  );
  const backlog = (results.startupBacklog = await benchStartupBacklog(backlogMessages, 3, log));
  rows.push([
    `start to accepting MQTT connections with ${number(backlog.messages)} messages (${backlog.bufferMb} MB) buffered, ${backlog.cold ? 'page cache emptied' : 'from the page cache'}, ms (lower is better)`,
    backlog.withBacklog.median,
    'the same gateway, its buffer empty',
    backlog.empty.median,
    ratio(backlog.withBacklog.median, backlog.empty.median),
  ]);
  log(
    `  with the backlog ${backlog.withBacklog.median} (${backlog.withBacklog.min}-${backlog.withBacklog.max}) ms, empty ${backlog.empty.median} (${backlog.empty.min}-${backlog.empty.max}) ms; ${backlog.checkMs === null ? 'its integrity check ran before the start (a small buffer)' : `its integrity check after the start ${backlog.checkMs} ms (QoS 1 and 2 PUBACKs wait for it)`}`,
  );
}
if (selected.has('telemetry')) {
  const messages = Number(process.env['FERRY_BENCH_TELEMETRY_MESSAGES'] ?? 50_000);
  const rounds = Number(process.env['FERRY_BENCH_TELEMETRY_ROUNDS'] ?? 3);
  log(
    `telemetry: ${messages} QoS 1 messages to Kafka with telemetry off, OTLP export (traces at the default ratio, metrics) and the eBPF collector, ${rounds} alternating rounds...`,
  );
  const telemetry = (results.telemetry = await benchTelemetry(messages, rounds, log));
  rows.push(
    [
      'QoS 1 devices to Kafka with traces (ratio 0.1) and metrics over OTLP, msgs/s (goal ≥ 0.9)',
      telemetry.otlp.perSec,
      'telemetry off',
      telemetry.off.perSec,
      telemetry.otlpRatio.throughput,
    ],
    [
      'QoS 1 devices to Kafka with the eBPF collector (bpftrace), msgs/s (goal ≥ 0.95)',
      telemetry.ebpf.perSec,
      'telemetry off',
      telemetry.off.perSec,
      telemetry.ebpfRatio.throughput,
    ],
  );
  log(
    `  gateway CPU ms per 1,000 messages: off ${telemetry.off.cpuMsPer1k}, OTLP ${telemetry.otlp.cpuMsPer1k} (ratio ${telemetry.otlpRatio.cpu}), eBPF ${telemetry.ebpf.cpuMsPer1k} (ratio ${telemetry.ebpfRatio.cpu}, bpftrace's own CPU not counted); ` +
      `${telemetry.otlp.exportedBytes} bytes exported; missing ${telemetry.off.missing} / ${telemetry.otlp.missing} / ${telemetry.ebpf.missing}`,
  );
}

const table = [
  '| measure | Ferry | baseline | baseline rate | ratio |',
  '|---|---:|---|---:|---:|',
  ...rows.map(([what, ferry, base, baseRate, ratio]) => `| ${what} | ${number(ferry)} | ${base} | ${number(baseRate)} | ${ratio} |`),
].join('\n');
process.stdout.write(`${table}\n`);
if (goals.length > 0) {
  process.stdout.write(
    [
      '',
      '| measure | result | goal | met |',
      '|---|---:|---:|---|',
      ...goals.map(([what, result, goal, met]) => `| ${what} | ${result} | ${goal} | ${met ? 'met' : 'not met'} |`),
      '',
    ].join('\n'),
  );
}
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
writeFileSync(
  out,
  `${JSON.stringify({ at: new Date().toISOString(), node: process.version, ...results, goals: goals.map(([what, result, goal, met]) => ({ what, result, goal, met })) }, null, 2)}\n`,
);
log(`results written to ${out}`);
