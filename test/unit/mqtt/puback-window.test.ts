import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PubackWindow, type PubackStream } from '../../../src/mqtt/puback-window.ts';

/** The PUBACKs of the current task leave once it ends. */
const taskEnd = () => new Promise<void>((resolve) => setImmediate(resolve));

function stream(): PubackStream & { written: number[]; writes: number; destroy(): void } {
  const s = {
    destroyed: false,
    writable: true,
    written: [] as number[],
    writes: 0,
    write(chunk: Uint8Array) {
      s.writes += 1;
      assert.equal(chunk.length % 4, 0);
      for (let at = 0; at < chunk.length; at += 4) {
        assert.deepEqual([...chunk.slice(at, at + 2)], [0x40, 0x02]);
        s.written.push(((chunk[at + 2] as number) << 8) | (chunk[at + 3] as number));
      }
      return true;
    },
    destroy() {
      s.destroyed = true;
      s.writable = false;
    },
  };
  return s;
}

test('PUBACKs go out in arrival order, each once its message and every earlier one is settled', async () => {
  const window = new PubackWindow();
  const s = stream();
  const [a, b, c] = [1, 2, 300].map((id) => window.add(s, id)!);
  window.ack(c!);
  window.ack(b!);
  await taskEnd();
  assert.deepEqual(s.written, []);
  assert.equal(window.pending, 1);
  window.ack(a!);
  assert.equal(window.pending, 0);
  await taskEnd();
  assert.deepEqual(s.written, [1, 2, 300]);
});

test('the PUBACKs due in one task leave in one write', async () => {
  const window = new PubackWindow();
  const s = stream();
  const entries = Array.from({ length: 500 }, (_, i) => window.add(s, i + 1)!);
  for (const entry of entries.slice(0, 200)) window.ack(entry);
  assert.deepEqual(s.written, [], 'not before the task ends');
  await taskEnd();
  assert.equal(s.writes, 1);
  for (const entry of entries.slice(200)) window.ack(entry);
  await taskEnd();
  assert.equal(s.writes, 2);
  assert.deepEqual(
    s.written,
    entries.map((e) => e.messageId),
  );
});

test('a long run of messages, acked out of order within bounds, is acked in arrival order with nothing left behind', async () => {
  const window = new PubackWindow();
  const s = stream();
  const open: ReturnType<PubackWindow['add']>[] = [];
  const ids: number[] = [];
  for (let n = 0; n < 20_000; n++) {
    const id = (n % 65535) + 1;
    ids.push(id);
    open.push(window.add(s, id));
    // Settle the second-oldest first now and then, so that the head waits.
    if (open.length > 50) {
      const i = n % 7 === 0 ? 1 : 0;
      window.ack(open.splice(i, 1)[0]!);
    }
  }
  for (const entry of open) window.ack(entry!);
  await taskEnd();
  assert.equal(window.pending, 0);
  assert.deepEqual(s.written, ids);
});

test('a dropped message gets no PUBACK and does not hold back later ones', async () => {
  const window = new PubackWindow();
  const s = stream();
  const [a, b] = [7, 8].map((id) => window.add(s, id)!);
  window.ack(b!);
  window.drop(a!);
  await taskEnd();
  assert.deepEqual(s.written, [8]);
});

test('a PUBACK due when its connection closes in the same task is not sent', async () => {
  const window = new PubackWindow();
  const s = stream();
  window.ack(window.add(s, 3)!);
  s.destroy();
  window.closed(s);
  await taskEnd();
  assert.deepEqual(s.written, []);
});

test('an ack that becomes due after its connection closed is never sent, not even on the next connection', async () => {
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
  await taskEnd();
  assert.deepEqual(first.written, []);
  assert.deepEqual(second.written, [6]);
  assert.equal(window.add(first, 9), undefined, 'a message read from a closed connection is not tracked');
});
