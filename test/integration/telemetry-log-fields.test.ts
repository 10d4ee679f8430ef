// The lines the message tracing logs (a traced batch, a failed span export) are JSON with each
// key once: under the gateway's `component: telemetry` logger they carried a second
// `component`, which log shippers resolve differently (first, last, or an error). The receiver
// is the test harness's OTLP/HTTP server.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { resolveTelemetry, telemetrySchema } from '../../src/config/telemetry.ts';
import { createDelivery } from '../../src/core/delivery.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { startTelemetry } from '../../src/observability/telemetry.ts';
import { capturedLogger, duplicateKeys } from '../harness/log-lines.ts';
import { startOtlpReceiver } from '../harness/otlp-receiver.ts';

test('the tracing logs JSON lines with each key once, under the gateway logger that names its component', { timeout: 30_000 }, async (t) => {
  const receiver = await startOtlpReceiver();
  t.after(() => receiver.close());
  const { logger: root, lines } = capturedLogger('debug');
  const logger = root.child({ component: 'telemetry' });
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
