import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TestScheduler } from 'rxjs/testing';
import { batchBy } from '../../../src/core/batch-by.ts';

const scheduler = () => new TestScheduler((actual, expected) => assert.deepEqual(actual, expected));
const sizes: Record<string, number> = { a: 1, b: 1, c: 1, d: 1, L: 10, M: 6 };

test('a batch closes at its count, or its time after its first item', () => {
  scheduler().run(({ cold, expectObservable }) => {
    const input = cold('abc-d 20ms a|');
    expectObservable(input.pipe(batchBy({ count: 3, timeMs: 5 }))).toBe('--x 6ms y 16ms (z|)', { x: ['a', 'b', 'c'], y: ['d'], z: ['a'] });
  });
});

test('a batch closes at its bytes, or before an item that would take it past them; a larger item goes alone', () => {
  scheduler().run(({ cold, expectObservable }) => {
    const input = cold('abMcL 9ms d|');
    expectObservable(input.pipe(batchBy({ count: 100, timeMs: 50, bytes: 8, sizeOf: (s: string) => sizes[s] ?? 0 }))).toBe('--x-(yz) 7ms (w|)', {
      x: ['a', 'b', 'M'],
      y: ['c'],
      z: ['L'],
      w: ['d'],
    });
  });
});

test('completion flushes the partial batch; an empty input emits nothing', () => {
  scheduler().run(({ cold, expectObservable }) => {
    expectObservable(cold('ab|').pipe(batchBy({ count: 10, timeMs: 100 }))).toBe('--(x|)', { x: ['a', 'b'] });
    expectObservable(cold('---|').pipe(batchBy({ count: 10, timeMs: 1 }))).toBe('---|');
  });
});
