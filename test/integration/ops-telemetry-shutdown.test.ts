// Shutdown with the OTLP collector down or hanging stays within shutdown.drainTimeoutMs.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:http';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { connectAsync } from 'mqtt';
import pino from 'pino';
import { loadConfig } from '../../src/config/load.ts';
import { type FinishedSpan, SpanExport, SpanKind } from '../../src/observability/span-export.ts';
import { Gateway } from '../../src/runtime/gateway.ts';
import { componentKinds } from '../../src/runtime/registry.ts';
import { blackHole } from '../harness/black-hole.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-ops-telemetry-');

const span = (i: number): FinishedSpan => ({
  traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
  spanId: i.toString(16).padStart(16, '0'),
  parentSpanId: undefined,
  remoteParent: false,
  name: 'ingress',
  kind: SpanKind.consumer,
  start: Date.now(),
  end: Date.now(),
  attributes: {},
  links: undefined,
  error: undefined,
});

test('span export shutdown: after a failed export the rest is dropped, not sent batch after batch', async () => {
  let requests = 0;
  const server = createServer((req, res) => {
    requests++;
    req.resume();
    req.on('end', () => res.writeHead(500).end());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const lines: string[] = [];
  const logger = pino({ level: 'warn' }, { write: (line: string) => lines.push(line) });
  try {
    const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/v1/traces`;
    const spans = new SpanExport({ url, headers: {} }, { 'service.name': 't' }, '0', logger, { batchSize: 10, delayMs: 60_000, maxQueue: 1000 });
    for (let i = 0; i < 9; i++) spans.add(span(i));
    for (let i = 9; i < 50; i++) spans.add(span(i)); // the tenth span sends the first batch; the rest wait for it
    await spans.shutdown();
    assert.equal(requests, 1, 'one failed export, then the 40 spans left are dropped');
    assert.ok(
      lines.some((l) => JSON.parse(l).dropped === 40),
      `the drop is logged with its count: ${lines.join('')}`,
    );
  } finally {
    server.close();
  }
});

test('gateway stop: a hanging OTLP collector gets what is left of the drain deadline, not its exporters’ timeouts', async () => {
  const hole = await blackHole();
  const root = tempDir();
  writeFileSync(
    join(root, 'gateway.yaml'),
    `mqtt: {host: 127.0.0.1, port: 0, allowAnonymous: loopback}\nadmin: {enabled: false}\nshutdown: {drainTimeoutMs: 500}\ndevices: []\nbridges: []\ngateway: {dataDir: data}\ntelemetry: {endpoint: "http://${hole.address}", traces: {sampleRatio: 1}, ebpf: off}\n`,
  );
  const lines: string[] = [];
  const logger = pino({ level: 'warn' }, { write: (line: string) => lines.push(line) });
  const gateway = new Gateway(loadConfig(join(root, 'gateway.yaml'), { kinds: componentKinds, env: {} }), logger, 'test');
  await gateway.start();
  try {
    const client = await connectAsync(`mqtt://127.0.0.1:${gateway.mqttPort}`, { clientId: 'd1', reconnectPeriod: 0 });
    for (let i = 0; i < 5; i++) await client.publishAsync('devices/d1/t', JSON.stringify({ i }), { qos: 1 });
    await client.endAsync();
    const since = Date.now();
    await gateway.stop();
    const took = Date.now() - since;
    // 500 ms of drain deadline, then at most the 1 s grace; the exporters' own timeout is 10 s.
    assert.ok(took < 4000, `stop took ${took} ms`);
    assert.ok(
      lines.some((l) => String(JSON.parse(l).msg).includes('telemetry export did not finish')),
      `the dropped telemetry is logged: ${lines.join('')}`,
    );
  } finally {
    await gateway.stop();
    hole.close();
  }
});
