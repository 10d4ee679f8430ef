import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createEnvelope } from '../../../src/core/envelope.ts';
import { TemplateError } from '../../../src/core/template.ts';
import { kafkaSource } from '../../../src/kafka/source.ts';
import { deviceSink } from '../../../src/mqtt/device-sink.ts';
import { mqttClientSink } from '../../../src/mqtt/client-sink.ts';
import { constantTopicProblem, sinkTopicRenderer } from '../../../src/mqtt/sink-topic.ts';

const limits = { maxLength: 65_535, maxLevels: 100 };
const envelope = (payload: object, key?: string) =>
  createEnvelope({
    topic: 'devices/sensor-1/telemetry/x',
    payload: JSON.stringify(payload),
    origin: { source: 'mqtt', clientId: 'sensor-1' },
    ...(key === undefined ? {} : { key }),
  });

test('allowedTopics are MQTT topic filters; a rendered topic outside them is refused (issue 16, item 4)', () => {
  const render = sinkTopicRenderer(
    { topic: 'devices/${payload.to}/commands/${payload.name}', allowedTopics: ['devices/+/commands/led', 'devices/+/commands/config/#'], onUnsafeTopicValue: 'refuse' },
    [],
    limits,
    false,
  );
  assert.equal(render(envelope({ to: 'sensor-2', name: 'led' })), 'devices/sensor-2/commands/led');
  assert.throws(() => render(envelope({ to: 'sensor-2', name: 'unlock' })), /not in allowedTopics/);
  assert.throws(() => render(envelope({ to: 'sensor-2/commands/led', name: 'x' })), /must stay within its topic level/);
  assert.throws(() => render(envelope({ to: 'sensor-2' })), TemplateError);
});

test("a topic starting with '$' is refused unless the template's own text starts with it (mqttClient only)", () => {
  const fromData = sinkTopicRenderer({ topic: '${payload.to}/x', onUnsafeTopicValue: 'refuse' }, [], limits, true);
  assert.throws(() => fromData(envelope({ to: '$SYS' })), /reserved/);
  const aws = sinkTopicRenderer({ topic: '$aws/things/${clientId}/shadow/update', onUnsafeTopicValue: 'refuse' }, [], limits, true);
  assert.equal(aws(envelope({})), '$aws/things/sensor-1/shadow/update');
  const devices = sinkTopicRenderer({ topic: '$aws/things/${clientId}', onUnsafeTopicValue: 'refuse' }, [], limits, false);
  assert.throws(() => devices(envelope({})), /reserved/);
});

test('a topic whose own text has a wildcard, or a constant topic outside its allowedTopics, is a config error', () => {
  assert.match(constantTopicProblem({ topic: 'devices/+/${key}', onUnsafeTopicValue: 'refuse' }) ?? '', /"\+" in its own text/);
  assert.match(constantTopicProblem({ topic: 'alerts/all', allowedTopics: ['devices/#'], onUnsafeTopicValue: 'refuse' }) ?? '', /not in allowedTopics/);
  assert.equal(constantTopicProblem({ topic: 'devices/all', allowedTopics: ['devices/#'], onUnsafeTopicValue: 'refuse' }), undefined);
  assert.equal(deviceSink.schema.safeParse({ topic: 'devices/${key}/commands', allowedTopics: ['devices/a+'] }).success, false);
  assert.equal(deviceSink.schema.safeParse({ topic: 'devices/${key}/#' }).success, false);
  assert.equal(
    mqttClientSink.schema.safeParse({ url: 'mqtt://127.0.0.1', clientId: 'c', topic: 'up/${topic}', allowedTopics: ['up/#'], onUnsafeTopicValue: 'escape' }).success,
    true,
  );
  assert.equal(mqttClientSink.schema.safeParse({ url: 'mqtt://127.0.0.1', clientId: 'c', topic: 'up/x', allowedTopics: ['down/#'] }).success, false);
});

test('a command expiry or a stop timeout longer than a timer can wait (24.8 days) is a config error, not a command expired at once', () => {
  const expiry = deviceSink.schema.safeParse({ topic: 'devices/${key}/commands', expiryMs: 30 * 24 * 3_600_000 });
  assert.equal(expiry.success, false);
  assert.match(expiry.error?.issues[0]?.message ?? '', /at most 2147483647 ms \(24\.8 days\)/);
  assert.equal(deviceSink.schema.safeParse({ topic: 'devices/${key}/commands', expiryMs: 2 ** 31 - 1 }).success, true);
  assert.equal(deviceSink.schema.safeParse({ topic: 'devices/${key}/commands', stopTimeoutMs: 2 ** 31 }).success, false);
  const kafka = { brokers: ['127.0.0.1:9092'], groupId: 'g', topics: ['t'] };
  assert.equal(kafkaSource.schema.safeParse({ ...kafka, stopTimeoutMs: 2 ** 31 - 1 }).success, true);
  assert.equal(kafkaSource.schema.safeParse({ ...kafka, stopTimeoutMs: 2 ** 31 }).success, false);
});

test('an upstream sink refuses a topic with a Unicode noncharacter; the devices sink does not check for them', () => {
  const config = { topic: '${topic}', onUnsafeTopicValue: 'refuse' as const };
  const message = (topic: string) => createEnvelope({ topic, payload: 'x', origin: { source: 'test' } });
  const upstream = sinkTopicRenderer(config, [], { maxLength: 65_535, maxLevels: Number.POSITIVE_INFINITY }, false, true);
  for (const nonchar of ['\uffff', '\ufffe', '\ufdd0', '\ufdef', '\u{1fffe}', '\u{10ffff}']) assert.throws(() => upstream(message(`up/${nonchar}`)), /noncharacter/);
  for (const fine of ['up/\ufdcf', 'up/\ufff0', 'up/\u{1fffd}', 'up/é😀']) assert.equal(upstream(message(fine)), fine);
  const devices = sinkTopicRenderer(config, [], { maxLength: 65_535, maxLevels: Number.POSITIVE_INFINITY }, false);
  assert.equal(devices(message('up/\uffff')), 'up/\uffff');
});
