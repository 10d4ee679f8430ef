import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PubackWindow, type PubackStream } from '../../../src/mqtt/puback-window.ts';

function stream(): PubackStream & { written: number[]; destroy(): void } {
  const s = {
    destroyed: false,
    writable: true,
    written: [] as number[],
    write(chunk: Uint8Array) {
      assert.deepEqual([...chunk.slice(0, 2)], [0x40, 0x02]);
      s.written.push(((chunk[2] as number) << 8) | (chunk[3] as number));
      return true;
    },
    destroy() {
      s.destroyed = true;
      s.writable = false;
    },
  };
  return s;
}

test('PUBACKs go out in arrival order, each once its message and every earlier one is settled', () => {
  const window = new PubackWindow();
  const s = stream();
  const [a, b, c] = [1, 2, 300].map((id) => window.add(s, id)!);
  window.ack(c!);
  window.ack(b!);
  assert.deepEqual(s.written, []);
  assert.equal(window.pending, 1);
  window.ack(a!);
  assert.deepEqual(s.written, [1, 2, 300]);
  assert.equal(window.pending, 0);
});

test('a dropped message gets no PUBACK and does not hold back later ones', () => {
  const window = new PubackWindow();
  const s = stream();
  const [a, b] = [7, 8].map((id) => window.add(s, id)!);
  window.ack(b!);
  window.drop(a!);
  assert.deepEqual(s.written, [8]);
});

test('an ack that becomes due after its connection closed is never sent, not even on the next connection', () => {
  const window = new PubackWindow();
  const first = stream();
  const old = window.add(first, 5)!;
  first.destroy();
  window.closed(first);
  assert.equal(window.pending, 0);
  const second = stream();
  const fresh = window.add(second, 6)!;
  window.ack(old);
  window.ack(fresh);
  assert.deepEqual(first.written, []);
  assert.deepEqual(second.written, [6]);
  assert.equal(window.add(first, 9), undefined, 'a message read from a closed connection is not tracked');
});
