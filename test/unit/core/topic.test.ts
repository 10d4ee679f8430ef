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

test('topicMatches agrees with matching split levels, on generated filters and topics', () => {
  const reference = (filter: string, topic: string): boolean => {
    const f = filter.split('/');
    const t = topic.split('/');
    if (topic.startsWith('$') && !filter.startsWith('$')) return false;
    for (let i = 0; i < f.length; i++) {
      if (f[i] === '#') return true;
      if (i >= t.length) return false;
      if (f[i] !== '+' && f[i] !== t[i]) return false;
    }
    return f.length === t.length;
  };
  const levels = ['', 'a', 'b', 'ab', '$SYS', 'é'];
  const join = (n: number, pick: (i: number) => string) => Array.from({ length: n }, (_, i) => pick(i)).join('/');
  let seed = 7;
  const random = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
  for (let i = 0; i < 5000; i++) {
    const topic = join(1 + random(4), () => levels[random(levels.length)] as string);
    const depth = 1 + random(4);
    const filter = join(depth, (j) => {
      const r = random(8);
      if (r === 0) return '+';
      if (r === 1 && j === depth - 1) return '#';
      return levels[random(levels.length)] as string;
    });
    assert.equal(topicMatches(filter, topic), reference(filter, topic), `${filter} ~ ${topic}`);
  }
});

test('topics and filters with control characters or ill-formed UTF-8 are invalid (issue 16, item 8)', async () => {
  const { invalidTopicReason, invalidFilterWithin } = await import('../../../src/core/topic.ts');
  const limits = { maxLength: 1024, maxLevels: 32 };
  assert.match(invalidTopicReason('a/b\nforged', limits) ?? '', /control characters.*U\+000A/);
  assert.match(invalidTopicReason('a/\u001b[2J', limits) ?? '', /control characters.*U\+001B/);
  assert.match(invalidTopicReason('a/\u009b', limits) ?? '', /control characters.*U\+009B/);
  assert.match(invalidTopicReason('a/\u007f', limits) ?? '', /control characters/);
  // The parser decodes an overlong '/' (C0 AF) or an encoded surrogate (ED A0 80) to U+FFFD.
  for (const bytes of [
    [0x61, 0xc0, 0xaf, 0x62],
    [0x61, 0xed, 0xa0, 0x80],
  ]) {
    assert.match(invalidTopicReason(Buffer.from(bytes).toString('utf8'), limits) ?? '', /well-formed UTF-8/);
  }
  assert.equal(invalidTopicReason('devices/é/ü/日本', limits), undefined);
  assert.match(invalidFilterWithin('a/\n/#', limits) ?? '', /control characters/);
});
