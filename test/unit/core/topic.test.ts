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

test('publish topics and filters are checked for NUL, length and depth', async () => {
  const { invalidTopicReason, invalidFilterWithin } = await import('../../../src/core/topic.ts');
  const limits = { maxLength: 20, maxLevels: 3 };
  assert.equal(invalidTopicReason('a/b/c', limits), undefined);
  assert.match(invalidTopicReason('a/b/c/d', limits) ?? '', /deeper than 3/);
  assert.match(invalidTopicReason('a'.repeat(21), limits) ?? '', /longer than 20/);
  assert.match(invalidTopicReason('é'.repeat(11), limits) ?? '', /longer than 20 bytes/);
  assert.match(invalidTopicReason('a\u0000b', limits) ?? '', /NUL/);
  assert.match(invalidTopicReason('a/+', limits) ?? '', /wildcards/);
  assert.match(invalidTopicReason('', limits) ?? '', /empty/);
  assert.equal(invalidFilterWithin('a/+/#', limits), undefined);
  assert.match(invalidFilterWithin('a+/b', limits) ?? '', /whole level/);
  assert.match(invalidFilterWithin('a/b/c/#', limits) ?? '', /deeper/);
});
