// What an OTLP receiver gets for the forms `telemetry.endpoint` takes: `/v1/<signal>` was
// appended to the whole URL, so an endpoint with a query (`http://c:4318/?api_key=k`, as some
// hosted receivers take their key) was sent `/?api_key=k/v1/logs`; the path now goes after any
// prefix and the query stays at the end. A user and password in the endpoint are sent as HTTP
// Basic auth. The receiver is the test harness's OTLP/HTTP server.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import { resolveTelemetry, telemetrySchema } from '../../src/config/telemetry.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { LogBridge } from '../../src/observability/log-bridge.ts';
import { startTelemetry } from '../../src/observability/telemetry.ts';
import { capturedLogger } from '../harness/log-lines.ts';
import { type OtlpReceiver, startOtlpReceiver, withCredentials } from '../harness/otlp-receiver.ts';

const SAMPLED = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';

/** Exports one span, the metrics and one log line to `endpoint` (or the environment's), and returns the requests the receiver got. */
async function exportOnce(receiver: OtlpReceiver, section: unknown, env: Record<string, string> = {}, logger = pino({ level: 'silent' })) {
  const from = receiver.requests.length;
  const settings = resolveTelemetry(telemetrySchema().parse({ ...(section as object), logs: { enabled: true } }), 'gw', env);
  const counters = new CounterRegistry();
  counters.count('host.read_errors');
  const logBridge = new LogBridge();
  const telemetry = await startTelemetry(settings, { logger, counters, gauges: () => ({}), version: 'test', logBridge });
  telemetry?.tracing?.ingress('b', createEnvelope({ topic: 't', payload: 'x', headers: { traceparent: SAMPLED }, origin: { source: 'mqtt' } }))?.end();
  logBridge.line?.(JSON.stringify({ level: 30, msg: 'a line' }));
  await telemetry?.shutdown();
  return receiver.requests.slice(from);
}

test('each signal goes to <endpoint path>/v1/<signal> with the endpoint query at the end', { timeout: 60_000 }, async (t) => {
  const receiver = await startOtlpReceiver();
  t.after(() => receiver.close());
  const cases: [endpoint: string, path: string, query: string][] = [
    [`${receiver.url}/?api_key=k-1`, '', '?api_key=k-1'],
    [`${receiver.url}?api_key=k-1&region=eu`, '', '?api_key=k-1&region=eu'],
    [`${receiver.url}/otlp`, '/otlp', ''],
    [`${receiver.url}/otlp/`, '/otlp', ''],
    [`${receiver.url}/otlp//?api_key=k-2`, '/otlp', '?api_key=k-2'],
    [receiver.url, '', ''],
  ];
  for (const [endpoint, path, query] of cases) {
    const expected = ['logs', 'metrics', 'traces'].map((signal) => `${path}/v1/${signal}${query}`);
    const fromFile = await exportOnce(receiver, { endpoint });
    assert.deepEqual([...new Set(fromFile.map((r) => r.url))].sort(), expected, endpoint);
    const fromEnv = await exportOnce(receiver, {}, { OTEL_EXPORTER_OTLP_ENDPOINT: endpoint });
    assert.deepEqual([...new Set(fromEnv.map((r) => r.url))].sort(), expected, `OTEL_EXPORTER_OTLP_ENDPOINT=${endpoint}`);
  }
  assert.ok(receiver.spans.length > 0 && receiver.points.length > 0 && receiver.logs.length > 0, 'the receiver decoded each signal');
});

test('a user and password in the endpoint are sent as HTTP Basic auth to every signal, and are not logged', { timeout: 60_000 }, async (t) => {
  const receiver = await startOtlpReceiver();
  t.after(() => receiver.close());
  const { logger, lines } = capturedLogger('debug');
  const endpoint = withCredentials(receiver.url, 'collector-user', 'p@ss-in-the-url-7f3a');
  const basic = `Basic ${Buffer.from('collector-user:p@ss-in-the-url-7f3a').toString('base64')}`;

  const settings = resolveTelemetry(telemetrySchema().parse({ endpoint: endpoint.href, logs: { enabled: true } }), 'gw', {});
  for (const target of [settings?.traces, settings?.metrics, settings?.logs]) {
    assert.ok(target !== undefined);
    assert.equal(new URL(target.url).username, '', 'the URL handed to the exporter carries no credential');
    assert.equal(target.headers['authorization'], basic);
  }

  const requests = await exportOnce(receiver, { endpoint: endpoint.href }, {}, logger);
  assert.deepEqual([...new Set(requests.map((r) => r.url))].sort(), ['/v1/logs', '/v1/metrics', '/v1/traces']);
  for (const request of requests) assert.equal(request.headers.authorization, basic, request.url);
  for (const secret of ['p@ss-in-the-url-7f3a', 'p%40ss-in-the-url-7f3a', basic]) assert.ok(!lines.join('\n').includes(secret), `${secret} is not logged`);

  // An Authorization of the headers wins (here the environment's: gateway.yaml refuses both at once).
  const env = { OTEL_EXPORTER_OTLP_ENDPOINT: endpoint.href, OTEL_EXPORTER_OTLP_HEADERS: 'Authorization=Bearer%20t-1' };
  for (const request of await exportOnce(receiver, {}, env)) {
    assert.equal(request.headers.authorization, 'Bearer t-1', request.url);
  }
});

test('gateway.yaml with a user and password in telemetry.endpoint and an Authorization in telemetry.headers is refused', () => {
  const parsed = telemetrySchema().safeParse({ endpoint: 'http://u:p@collector:4318', headers: { Authorization: 'Bearer t' } });
  assert.equal(parsed.success, false);
  assert.deepEqual(parsed.error?.issues[0]?.path, ['endpoint']);
  assert.match(parsed.error?.issues[0]?.message ?? '', /telemetry\.headers/);
  assert.equal(telemetrySchema().safeParse({ endpoint: 'http://u:p@collector:4318', headers: { 'x-api-key': 'k' } }).success, true);
});
