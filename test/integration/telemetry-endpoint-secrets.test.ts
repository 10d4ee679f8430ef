// An OTLP endpoint that carries a credential (user and password in the URL, an API key in its
// query) is logged without it when export starts: the line goes to standard output and, with
// log export on, to the receiver too. The receiver is the test harness's OTLP/HTTP server.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { resolveTelemetry, telemetrySchema } from '../../src/config/telemetry.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { startTelemetry } from '../../src/observability/telemetry.ts';
import { capturedLogger } from '../harness/log-lines.ts';
import { startOtlpReceiver, withCredentials } from '../harness/otlp-receiver.ts';

test('the endpoints logged when OTLP export starts show no user, password or query value of theirs', { timeout: 30_000 }, async (t) => {
  const receiver = await startOtlpReceiver();
  t.after(() => receiver.close());
  const { logger, lines } = capturedLogger('info');
  const endpoint = withCredentials(receiver.url, 'collector-user', 'pass-in-the-url-7f3a');
  const settings = resolveTelemetry(telemetrySchema().parse({}), 'gw', {
    OTEL_EXPORTER_OTLP_ENDPOINT: endpoint.href,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${receiver.url}/v1/traces?api-key=key-in-the-query-91c2`,
  });
  const telemetry = await startTelemetry(settings, { logger, counters: new CounterRegistry(), gauges: () => ({}), version: 'test' });
  await telemetry?.shutdown();

  const started = lines.find((line) => line.includes('exporting telemetry over OTLP/HTTP'));
  assert.ok(started !== undefined, 'the start is logged');
  const fields = JSON.parse(started) as Record<string, string>;
  assert.equal(fields['traces'], `${receiver.url}/v1/traces?api-key=***`);
  // The user and password travel as HTTP Basic auth (telemetry-endpoint-url.test.ts), not in the URL.
  assert.equal(fields['metrics'], `${receiver.url}/v1/metrics`);
  for (const secret of ['pass-in-the-url-7f3a', 'collector-user', 'key-in-the-query-91c2']) {
    assert.ok(!lines.join('\n').includes(secret), `${secret} is not logged`);
  }
});
