import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createEnvelope } from '../../../src/core/envelope.ts';
import { isFerryError } from '../../../src/core/errors.ts';
import { allowedTopicProblem, recordRenderer, topicAllowList } from '../../../src/kafka/records.ts';
import { kafkaSink } from '../../../src/kafka/sink.ts';

test('allowedTopics patterns: "*" is a run of topic characters without "."; the rest is literal', () => {
  const allowed = topicAllowList(['iot.*.telemetry', 'audit']);
  for (const topic of ['iot.pump-7.telemetry', 'iot.a_b.telemetry', 'audit']) assert.ok(allowed(topic), topic);
  for (const topic of ['iot.a.b.telemetry', 'iot..telemetry', 'iotX.a.telemetry', 'iot.a.telemetryX', 'audit2', 'x.audit']) assert.ok(!allowed(topic), topic);
  assert.equal(allowedTopicProblem('iot.*.x'), undefined);
  assert.match(allowedTopicProblem('iot/*') ?? '', /a Kafka topic is/);
  assert.match(allowedTopicProblem('iot.**') ?? '', /"\*\*" is one "\*"/);
});

test('a message whose topic renders outside allowedTopics is refused alone as MESSAGE_INVALID, saying so', () => {
  const render = recordRenderer({ topic: 'iot.${1}.telemetry', allowedTopics: ['iot.*.telemetry'], headers: {} }, ['devices/+/telemetry'], 'kafka sink');
  const envelope = (device: string) => createEnvelope({ topic: `devices/${device}/telemetry`, payload: '{}', origin: { source: 'mqtt' } });
  assert.equal(render(envelope('pump-7')).topic, 'iot.pump-7.telemetry');
  assert.throws(
    () => render(envelope('x.secrets')),
    (error: unknown) =>
      isFerryError(error, 'MESSAGE_INVALID') && /topic 'iot\.x\.secrets\.telemetry' .*is not in allowedTopics \(iot\.\*\.telemetry\)/.test(error.message) && !error.retryable,
  );
  // Each message's topic is checked, whatever came before it (the last good topic is remembered).
  for (let round = 0; round < 2; round++) {
    assert.equal(render(envelope('pump-7')).topic, 'iot.pump-7.telemetry');
    assert.equal(render(envelope('pump-7')).topic, 'iot.pump-7.telemetry');
    for (let i = 0; i < 2; i++) {
      assert.throws(() => render(envelope('x.secrets')), /is not in allowedTopics/);
      assert.throws(() => render(envelope('a b')), /topic 'iot\.a b\.telemetry' .*is invalid/);
    }
  }
});

test('the kafka sink schema refuses bad patterns, and a fixed topic that its own allowedTopics exclude', () => {
  const parse = (config: Record<string, unknown>) => kafkaSink.schema.safeParse({ brokers: ['k:9092'], ...config });
  assert.ok(parse({ topic: 'iot.${1}', allowedTopics: ['iot.*'] }).success);
  assert.ok(parse({ topic: 'iot.fixed', allowedTopics: ['iot.*'] }).success);
  const excluded = parse({ topic: 'other', allowedTopics: ['iot.*'] });
  assert.ok(!excluded.success && excluded.error.issues.some((i) => /topic 'other' is not in allowedTopics/.test(i.message)));
  const bad = parse({ topic: 'iot.${1}', allowedTopics: ['iot/*'] });
  assert.ok(!bad.success && bad.error.issues.some((i) => /allowed topic 'iot\/\*'/.test(i.message)));
});
