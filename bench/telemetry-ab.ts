// The OTLP gateway of another checkout against this one's, alternated round by round (and which
// goes first, too), to measure what a change costs with telemetry exported:
//   FERRY_BENCH_BEFORE=/path/to/other/checkout node --import tsx bench/telemetry-ab.ts
// The other checkout must be built (`npm ci` there). FERRY_BENCH_AB_MESSAGES, _ROUNDS: the size.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { measureFerry } from './e2e.ts';
import { benchKafka, benchTopic, createAppendTimeTopic, deleteTopics } from './kafka.ts';
import { median } from './stats.ts';

const other = process.env['FERRY_BENCH_BEFORE'];
if (other === undefined) throw new Error('FERRY_BENCH_BEFORE: the checkout to compare with');
const before = ((await import(join(other, 'bench/e2e.ts'))) as { measureFerry: typeof measureFerry }).measureFerry;
const messages = Number(process.env['FERRY_BENCH_AB_MESSAGES'] ?? 50_000);
const rounds = Number(process.env['FERRY_BENCH_AB_ROUNDS'] ?? 5);
const log = (line: string) => console.log(line);

// An OTLP/HTTP receiver that takes every export.
const server = createServer((req, res) => {
  req.resume();
  req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'));
});
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
const telemetry = `{ endpoint: "http://127.0.0.1:${(server.address() as AddressInfo).port}", ebpf: off }`;

const kafka = await benchKafka(log);
const topics: string[] = [];
const results = { before: [] as { perSec: number; cpu: number }[], after: [] as { perSec: number; cpu: number }[] };
try {
  for (let round = 1; round <= rounds; round++) {
    const order = round % 2 === 1 ? (['after', 'before'] as const) : (['before', 'after'] as const);
    for (const name of order) {
      const topic = benchTopic(`ferry-bench-ab-${name}-`);
      topics.push(topic);
      await createAppendTimeTopic(kafka.brokers, topic);
      const result = await (name === 'before' ? before : measureFerry)(kafka, topic, { messages, log: () => {} }, telemetry);
      log(`round ${round} ${name}: ${result.perSec} msgs/s, ${result.cpuMsPer1k} CPU ms / 1,000 messages, ${result.missing} missing`);
      results[name].push({ perSec: result.perSec, cpu: result.cpuMsPer1k });
    }
  }
} finally {
  server.close();
  await deleteTopics(kafka.brokers, topics).catch(() => {});
  await kafka.stop();
}
for (const [name, rows] of Object.entries(results)) {
  const cpu = rows.map((r) => r.cpu);
  const perSec = rows.map((r) => r.perSec);
  log(`${name}: CPU ms / 1,000 median ${median(cpu)} (${Math.min(...cpu)}-${Math.max(...cpu)}), msgs/s median ${median(perSec)} (${Math.min(...perSec)}-${Math.max(...perSec)})`);
}
