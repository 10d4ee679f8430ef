// The lines the message tracing logs (a traced batch, a failed span export) are JSON with each
// key once: under the gateway's `component: telemetry` logger they carried a second
// `component`, which log shippers resolve differently (first, last, or an error). The receiver
// is the test harness's OTLP/HTTP server.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import pino from 'pino';
import { resolveTelemetry, telemetrySchema } from '../../src/config/telemetry.ts';
import { createDelivery } from '../../src/core/delivery.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { startTelemetry } from '../../src/observability/telemetry.ts';
import { startOtlpReceiver } from '../harness/otlp-receiver.ts';

/** The top-level keys of a JSON object line that appear more than once (JSON.parse keeps the last silently). */
function duplicateKeys(line: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === '{' || c === '[') depth++;
    else if (c === '}' || c === ']') depth--;
    else if (c === '"') {
      let end = i + 1;
      while (line[end] !== '"') end += line[end] === '\\' ? 2 : 1;
      if (depth === 1 && line[end + 1] === ':') keys.push(line.slice(i + 1, end));
      i = end;
    }
  }
  return keys.filter((key, i) => keys.indexOf(key) !== i);
}

test('the tracing logs JSON lines with each key once, under the gateway logger that names its component', { timeout: 30_000 }, async (t) => {
  const receiver = await startOtlpReceiver();
  t.after(() => receiver.close());
  const lines: string[] = [];
  const logger = pino(
    { level: 'debug' },
    new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(chunk.toString());
        done();
      },
    }),
  ).child({ component: 'telemetry' });
  const settings = resolveTelemetry(telemetrySchema().parse({ endpoint: receiver.url, metrics: { enabled: false } }), 'gw', {});
  const telemetry = await startTelemetry(settings, { logger, counters: new CounterRegistry(), gauges: () => ({}), version: 'test' });
  const tracing = telemetry?.tracing;
  assert.ok(tracing !== undefined);
  const envelope = createEnvelope({ topic: 't', payload: 'x', headers: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' }, origin: { source: 'mqtt' } });
  await tracing.sink('b', 'kafka').batch([createDelivery(envelope, { onAck: () => {}, onNack: () => {} })], async () => undefined);
  await telemetry?.shutdown();

  const traced = lines.find((line) => line.includes('writing a traced batch'));
  assert.ok(traced !== undefined, 'the traced batch is logged');
  for (const line of lines) assert.deepEqual(duplicateKeys(line), [], line);
  assert.equal((JSON.parse(traced) as Record<string, unknown>)['component'], 'telemetry');
});
