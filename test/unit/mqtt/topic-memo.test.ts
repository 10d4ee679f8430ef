// TopicMemo (src/mqtt/topic-memo.ts): the publish intake's answers about topics (valid or why
// not, which bridges take them), worked out once per topic and kept until they may have changed.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TopicMemo } from '../../../src/mqtt/topic-memo.ts';

function counting<T>(answer: (topic: string) => T): { memo: TopicMemo<T>; asked: string[] } {
  const asked: string[] = [];
  const memo = new TopicMemo((topic) => {
    asked.push(topic);
    return answer(topic);
  });
  return { memo, asked };
}

test('each topic is answered once, an undefined answer too, until forget', () => {
  const { memo, asked } = counting((topic) => (topic.includes('bad') ? 'bad topic' : undefined));
  for (let i = 0; i < 3; i++) {
    assert.equal(memo.get('a/b'), undefined);
    assert.equal(memo.get('a/bad'), 'bad topic');
  }
  assert.deepEqual(asked, ['a/b', 'a/bad']);
  memo.forget();
  assert.equal(memo.size, 0);
  assert.equal(memo.get('a/b'), undefined);
  assert.deepEqual(asked, ['a/b', 'a/bad', 'a/b']);
});

test('a topic equal to a kept one but another string is the same topic', () => {
  const { memo, asked } = counting((topic) => topic.length);
  memo.get('devices/d1/telemetry');
  memo.get(Buffer.from('devices/d1/telemetry').toString());
  assert.equal(asked.length, 1);
});

test('at 10,000 topics kept, all are forgotten and the next ones kept afresh', () => {
  const { memo, asked } = counting((topic) => topic);
  for (let i = 0; i < 10_000; i++) memo.get(`t/${i}`);
  assert.equal(memo.size, 10_000);
  memo.get('t/0');
  assert.equal(asked.length, 10_000, 'a kept topic is not asked again');
  memo.get('t/new');
  assert.equal(memo.size, 1, 'the bound reached: the others are forgotten');
  memo.get('t/0');
  assert.equal(asked.length, 10_002);
});

test('long topics are kept up to 1,000,000 characters in all, then all are forgotten', () => {
  const { memo, asked } = counting((topic) => topic.length);
  const long = (i: number) => `${String(i).padStart(6, '0')}/${'x'.repeat(99_993)}`;
  for (let i = 0; i < 10; i++) memo.get(long(i));
  assert.equal(memo.size, 10);
  memo.get(long(0));
  assert.equal(asked.length, 10, 'a kept topic is not asked again');
  memo.get(long(10));
  assert.equal(memo.size, 1, 'the characters bound reached: the others are forgotten');
});
