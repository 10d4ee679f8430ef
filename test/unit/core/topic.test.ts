import assert from 'node:assert/strict';
import { test } from 'node:test';
import { invalidFilterReason, topicMatches } from '../../../src/core/topic.ts';

test('topic filters match as MQTT 3.1.1 says', () => {
  const cases: [string, string, boolean][] = [
    ['devices/+/telemetry/#', 'devices/d1/telemetry/temp', true],
    ['devices/+/telemetry/#', 'devices/d1/telemetry', true],
    ['devices/+/telemetry/#', 'devices/d1/status', false],
    ['devices/+/telemetry/#', 'devices/d1/x/telemetry/t', false],
    ['a/b', 'a/b', true],
    ['a/b', 'a/b/c', false],
    ['a/+', 'a/', true],
    ['+/+', '/x', true],
    ['#', 'a/b/c', true],
    ['#', '$SYS/broker/load', false],
    ['+/broker', '$SYS/broker', false],
    ['$SYS/#', '$SYS/broker/load', true],
  ];
  for (const [filter, topic, expected] of cases) assert.equal(topicMatches(filter, topic), expected, `${filter} ~ ${topic}`);
});

test('invalid filters are named with a reason', () => {
  assert.equal(invalidFilterReason('devices/+/telemetry/#'), undefined);
  assert.match(invalidFilterReason('a/#/b') ?? '', /last/);
  assert.match(invalidFilterReason('a#') ?? '', /whole level/);
  assert.match(invalidFilterReason('a+/b') ?? '', /whole level/);
  assert.match(invalidFilterReason('') ?? '', /empty/);
  assert.match(invalidFilterReason('a\u0000b') ?? '', /NUL/);
});
