import assert from 'node:assert/strict';
import { test } from 'node:test';
import { OffsetWindow } from '../../../src/kafka/offset-window.ts';

function windowOf(offsets: readonly number[]): OffsetWindow {
  const window = new OffsetWindow();
  for (const offset of offsets) window.take(BigInt(offset));
  return window;
}

test('the commit point is the lowest unacked offset: acks out of order move it only when the gap closes', () => {
  const window = windowOf([10, 11, 12, 13]);
  assert.equal(window.commitPoint, 10n);
  assert.equal(window.ack(12n), false);
  assert.equal(window.ack(11n), false);
  assert.equal(window.commitPoint, 10n, 'never past the unacked 10');
  assert.equal(window.size, 4);
  assert.equal(window.ack(10n), true);
  assert.equal(window.commitPoint, 13n, '10, 11 and 12 are acked: the next to read is 13');
  assert.equal(window.size, 1);
  assert.equal(window.ack(13n), true);
  assert.equal(window.commitPoint, 14n);
  assert.equal(window.settled, true);
});

test('gaps in offsets (compaction, transaction markers) do not hold the commit point', () => {
  const window = windowOf([3, 7, 20]);
  window.ack(7n);
  assert.equal(window.commitPoint, 3n);
  window.ack(3n);
  assert.equal(window.commitPoint, 20n);
  window.ack(20n);
  assert.equal(window.commitPoint, 21n);
  assert.equal(window.next, 21n);
});

test('an ack twice, or of an offset never taken, changes nothing', () => {
  const window = windowOf([0, 1]);
  assert.equal(window.ack(1n), false);
  assert.equal(window.ack(1n), false);
  assert.equal(window.ack(5n), false);
  assert.equal(window.commitPoint, 0n);
  assert.equal(window.ack(0n), true);
  assert.equal(window.ack(0n), false);
  assert.equal(window.commitPoint, 2n);
});

test('nothing taken: no commit point; offsets must grow', () => {
  const window = new OffsetWindow();
  assert.equal(window.commitPoint, undefined);
  window.take(5n);
  assert.throws(() => window.take(5n), /out of order/);
});

test('a long run of acks in random order keeps the invariant: every offset below the commit point is acked', () => {
  const count = 5000;
  const window = windowOf(Array.from({ length: count }, (_, i) => i));
  const order = Array.from({ length: count }, (_, i) => i);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [order[i], order[j]] = [order[j] as number, order[i] as number];
  }
  const acked = new Set<number>();
  let lowestUnacked = 0;
  for (const offset of order) {
    window.ack(BigInt(offset));
    acked.add(offset);
    while (acked.has(lowestUnacked)) lowestUnacked += 1;
    assert.equal(window.commitPoint, BigInt(lowestUnacked));
    assert.equal(window.size, count - lowestUnacked);
  }
  assert.equal(window.commitPoint, BigInt(count));
  assert.equal(window.size, 0);
});
