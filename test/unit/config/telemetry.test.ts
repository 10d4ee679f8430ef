import assert from 'node:assert/strict';
import { test } from 'node:test';
import { resolveTelemetry, telemetrySchema } from '../../../src/config/telemetry.ts';

const section = (value: unknown = {}) => telemetrySchema().parse(value);

test('nothing is exported without an endpoint, or with OTEL_SDK_DISABLED', () => {
  assert.equal(resolveTelemetry(section(), 'gw', {}), undefined);
  assert.equal(resolveTelemetry(section({ endpoint: 'http://c:4318' }), 'gw', { OTEL_SDK_DISABLED: 'true' }), undefined);
});

test('the OTEL_* variables configure export; gateway.yaml wins where both say something', () => {
  const env = {
    OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318/',
    OTEL_EXPORTER_OTLP_LOGS_ENDPOINT: 'http://logs:4318/v1/logs',
    OTEL_EXPORTER_OTLP_HEADERS: 'api-key=a%20b,x=1',
    OTEL_SERVICE_NAME: 'edge',
    OTEL_RESOURCE_ATTRIBUTES: 'site=lab,ferry.gateway=spoofed',
    OTEL_TRACES_SAMPLER_ARG: '0.5',
    OTEL_METRIC_EXPORT_INTERVAL: '2000',
  };
  const fromEnv = resolveTelemetry(section({ logs: { enabled: true } }), 'gw-1', env);
  assert.deepEqual(fromEnv?.traces, { url: 'http://collector:4318/v1/traces', headers: { 'api-key': 'a b', x: '1' }, sampleRatio: 0.5 });
  assert.deepEqual(fromEnv?.metrics, { url: 'http://collector:4318/v1/metrics', headers: { 'api-key': 'a b', x: '1' }, intervalMs: 2000 });
  assert.equal(fromEnv?.logs?.url, 'http://logs:4318/v1/logs');
  assert.equal(fromEnv?.resource['service.name'], 'edge');
  assert.equal(fromEnv?.resource['site'], 'lab');
  assert.equal(fromEnv?.resource['ferry.gateway'], 'gw-1', 'the gateway name is not overridden by the environment');

  const fromFile = resolveTelemetry(section({ endpoint: 'http://mine:4318', serviceName: 'ferry-x', traces: { sampleRatio: 0.01 }, metrics: { enabled: false } }), 'gw-1', env);
  assert.equal(fromFile?.traces?.url, 'http://mine:4318/v1/traces');
  assert.equal(fromFile?.traces?.sampleRatio, 0.01);
  assert.equal(fromFile?.metrics, undefined);
  assert.equal(fromFile?.logs, undefined, 'logs are off unless enabled');
  assert.equal(fromFile?.resource['service.name'], 'ferry-x');
  assert.equal(resolveTelemetry(section({ endpoint: 'http://mine:4318' }), 'gw', {})?.traces?.sampleRatio, 0.1, 'the default ratio');
});
