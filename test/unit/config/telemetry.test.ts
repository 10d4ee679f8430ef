import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError } from '../../../src/config/issues.ts';
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

// An OTEL_EXPORTER_OTLP_ENDPOINT that is no http(s) URL failed at `ferry run` in the exporter's
// constructor ("Configuration: Could not parse user-provided export URL: 'not a url/v1/traces'"),
// or (`localhost:4318`, `ftp://c`) was taken and every export failed later, and `ferry validate`
// said ok; `telemetry.endpoint` took those two as well. Now each is a config problem naming the
// variable or the key and what it takes, and a variable not used is not checked.
const EXPECTED = 'expected the http:// or https:// URL of an OTLP/HTTP receiver, such as http://127.0.0.1:4318';
const BAD_ENDPOINTS = [
  ['not a url', `not a URL; ${EXPECTED}`],
  ['http://', `not a URL; ${EXPECTED}`],
  ['localhost:4318', `no http:// or https:// before the host; ${EXPECTED}`],
  ['ftp://collector:4318', `the scheme ftp: is not http: or https:; ${EXPECTED}`],
] as const;

/** The issues resolveTelemetry throws for `env`, as `path: message` lines; [] when it throws none. */
function envProblems(value: unknown, env: Record<string, string>): string[] {
  try {
    resolveTelemetry(section(value), 'gw', env);
    return [];
  } catch (error) {
    assert.ok(error instanceof ConfigError, String(error));
    return error.issues.map((i) => `${i.file}: ${i.path}: ${i.message}`);
  }
}

test('an endpoint variable that is not an http(s) URL is a config problem naming the variable', () => {
  for (const [value, message] of BAD_ENDPOINTS) {
    assert.deepEqual(envProblems({}, { OTEL_EXPORTER_OTLP_ENDPOINT: value }), [`environment: OTEL_EXPORTER_OTLP_ENDPOINT: ${message}`], value);
    assert.deepEqual(envProblems({}, { OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: value }), [`environment: OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: ${message}`], value);
  }
  assert.deepEqual(envProblems({}, { OTEL_EXPORTER_OTLP_ENDPOINT: 'c:4318', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'nope' }), [
    `environment: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: not a URL; ${EXPECTED}`,
    `environment: OTEL_EXPORTER_OTLP_ENDPOINT: no http:// or https:// before the host; ${EXPECTED}`,
  ]);
  // Not used, so not checked: gateway.yaml's endpoint wins, each signal has its own, export is off.
  assert.deepEqual(envProblems({ endpoint: 'http://c:4318' }, { OTEL_EXPORTER_OTLP_ENDPOINT: 'nope', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'nope' }), []);
  const own = { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://t:4318/v1/traces', OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: 'https://m/v1/metrics' };
  assert.deepEqual(envProblems({}, { ...own, OTEL_EXPORTER_OTLP_ENDPOINT: 'nope' }), []);
  assert.deepEqual(envProblems({}, { OTEL_EXPORTER_OTLP_ENDPOINT: 'nope', OTEL_SDK_DISABLED: 'true' }), []);
  // Empty is unset (the OpenTelemetry specification's rule for OTEL_* variables).
  assert.equal(resolveTelemetry(section(), 'gw', { OTEL_EXPORTER_OTLP_ENDPOINT: '' }), undefined);
  assert.equal(resolveTelemetry(section(), 'gw', { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: '' })?.traces?.url, 'http://c:4318/v1/traces');
  assert.equal(resolveTelemetry(section(), 'gw', { OTEL_EXPORTER_OTLP_ENDPOINT: 'HTTPS://C:4318' })?.metrics?.url, 'https://c:4318/v1/metrics');
});

test('telemetry.endpoint that is not an http(s) URL is refused with the same words, with or without an authorization header', () => {
  for (const [value, message] of BAD_ENDPOINTS) {
    for (const headers of [{}, { authorization: 'Bearer t' }]) {
      const result = telemetrySchema().safeParse({ endpoint: value, headers });
      assert.deepEqual(
        result.error?.issues.map((i) => [i.path.join('.'), i.message]),
        [['endpoint', message]],
        value,
      );
    }
  }
  assert.equal(telemetrySchema().safeParse({ endpoint: 'https://user:pass@c:4318/otlp?k=v' }).success, true);
});
