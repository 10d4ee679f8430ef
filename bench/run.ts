// `npm run bench`: runs every benchmark in one process, prints a table of ratios measured
// in this run, and writes bench/results.json. Absolute rates depend on the machine; the
// ratios against a baseline measured alongside are what to compare.
import { writeFileSync } from 'node:fs';
import { benchBuffer } from './buffer.ts';
import { benchIngest } from './ingest.ts';
import { benchPacketGuard } from './packet-guard.ts';

const messages = Number(process.env['FERRY_BENCH_MESSAGES'] ?? 100_000);
process.stderr.write(`durable buffer: ${messages} messages of 200 bytes, synchronous=FULL...\n`);
const buffer = await benchBuffer(messages);
process.stderr.write('packet-size guard: QoS 0 through aedes with and without it...\n');
const guard = await benchPacketGuard();
const ingestMessages = Number(process.env['FERRY_BENCH_INGEST_MESSAGES'] ?? 50_000);
process.stderr.write(`MQTT ingest: ${ingestMessages} messages of 200 bytes from 50 devices into Ferry, aedes and Mosquitto...\n`);
const ingest = await benchIngest(ingestMessages);

const rows = [
  ['durable enqueue (group commit, FULL), msgs/s', buffer.enqueue.ferry, 'raw better-sqlite3 insert, 1,000 rows/txn', buffer.enqueue.raw, buffer.enqueue.ratio],
  ['drain to a null sink (cursor, commit, delete), msgs/s', buffer.drain.ferry, 'raw select batch + delete', buffer.drain.raw, buffer.drain.ratio],
  ['MQTT QoS 0 through aedes with the packet-size guard, msgs/s', Math.round(guard.guarded), 'the same without the guard', Math.round(guard.plain), Math.round(guard.ratio * 100) / 100],
  ['QoS 1 ingest, 50 devices, acked at the publishers, msgs/s', ingest.qos1.ferry, 'plain aedes, no hooks', ingest.qos1.aedes, ingest.qos1.ferryVsAedes],
  ...(ingest.qos1.mosquitto === null ? [] : [['QoS 1 ingest, 50 devices, acked at the publishers, msgs/s', ingest.qos1.ferry, 'Mosquitto 2 (in memory)', ingest.qos1.mosquitto, ingest.qos1.ferryVsMosquitto]]),
  ['QoS 0 ingest, 50 devices, handled (QoS 1 fence), msgs/s', ingest.qos0.ferry, 'plain aedes, no hooks', ingest.qos0.aedes, ingest.qos0.ferryVsAedes],
];
const table = [
  '| measure | Ferry | baseline | baseline rate | ratio |',
  '|---|---:|---|---:|---:|',
  ...rows.map(([what, ferry, base, baseRate, ratio]) => `| ${what} | ${Number(ferry).toLocaleString('en')} | ${base} | ${Number(baseRate).toLocaleString('en')} | ${ratio} |`),
].join('\n');
process.stdout.write(`${table}\n`);
writeFileSync(new URL('./results.json', import.meta.url), `${JSON.stringify({ at: new Date().toISOString(), node: process.version, buffer, packetGuard: guard, ingest }, null, 2)}\n`);
