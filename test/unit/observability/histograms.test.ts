import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseTraceparent, sampledTraceparent } from '../../../src/core/tracing.ts';
import { CounterRegistry } from '../../../src/observability/counters.ts';
import { renderGatewayMetrics } from '../../../src/observability/gateway-metrics.ts';

const status = { state: 'running', uptimeSeconds: 1, listeners: [], inFlight: 0, bridges: [], buffer: { state: 'ok', held: 0, bridges: [] } };

test('a histogram shows on /metrics with cumulative buckets, +Inf, sum and count', () => {
  const counters = new CounterRegistry();
  const commits = counters.histogram('buffer.commit_seconds');
  commits.record(0.0002);
  commits.record(0.0003);
  commits.record(2);
  counters.histogram('sink.write_seconds', { bridge: 'b', sink: 'kafka' }).record(0.004, 3);
  const text = renderGatewayMetrics(status, counters);
  assert.match(text, /^# TYPE ferry_buffer_commit_seconds histogram$/m);
  assert.match(text, /^ferry_buffer_commit_seconds_bucket\{le="0.0001"\} 0$/m);
  assert.match(text, /^ferry_buffer_commit_seconds_bucket\{le="0.00025"\} 1$/m);
  assert.match(text, /^ferry_buffer_commit_seconds_bucket\{le="0.0005"\} 2$/m);
  assert.match(text, /^ferry_buffer_commit_seconds_bucket\{le="1"\} 2$/m);
  assert.match(text, /^ferry_buffer_commit_seconds_bucket\{le="\+Inf"\} 3$/m);
  assert.match(text, /^ferry_buffer_commit_seconds_count 3$/m);
  assert.match(text, /^ferry_buffer_commit_seconds_sum 2.0005$/m);
  assert.match(text, /^ferry_sink_write_seconds_bucket\{bridge="b",sink="kafka",le="0.005"\} 3$/m);
  assert.doesNotMatch(text, /ferry_sink_message_age_seconds/, 'a histogram without values is left out');
});

test('a histogram not in the catalogue is refused', () => {
  assert.throws(() => new CounterRegistry().histogram('nope.seconds'), /not declared/);
  assert.throws(() => new CounterRegistry().histogram('buffer.appended'), /not declared/);
});

test('traceparent: parsed when valid, sampled flag read without parsing', () => {
  const tp = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
  assert.deepEqual(parseTraceparent(tp), { traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7', sampled: true });
  assert.equal(parseTraceparent(tp.replace(/01$/, '00'))?.sampled, false);
  assert.equal(parseTraceparent('00-00000000000000000000000000000000-00f067aa0ba902b7-01'), undefined);
  assert.equal(parseTraceparent('garbage'), undefined);
  assert.equal(sampledTraceparent(tp), true);
  assert.equal(sampledTraceparent(tp.replace(/01$/, '0b')), true);
  assert.equal(sampledTraceparent(tp.replace(/01$/, '02')), false);
  assert.equal(sampledTraceparent(undefined), false);
});
