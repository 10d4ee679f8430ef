// The memory src/buffer/recent.ts keeps of the messages just appended is bounded over all
// bridges (4,096 messages, 4 MiB of payload): a gateway whose sinks are all down does not keep
// every bridge's last messages, and what was let go is read from the database again (a read
// answers undefined for it). test/integration/buffer-recent.test.ts checks its answers against
// a real buffer.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RecentMessages } from '../../../src/buffer/recent.ts';
import { createEnvelope } from '../../../src/core/envelope.ts';

const entry = (bridge: string, bytes = 10) => ({ bridge, envelope: createEnvelope({ topic: 't', payload: Buffer.alloc(bytes), origin: { source: 'test' } }) });

/** How many of the bridge's messages with seqs first..last are kept: the newest ones, found by reading. */
function kept(recent: RecentMessages, bridge: string, first: number, last: number): number {
  for (let after = first - 1; after <= last; after++) {
    const found = recent.read(bridge, after, 10_000, 1);
    if (found === undefined) continue;
    assert.equal(found.at(-1)?.seq, found.length === 0 ? undefined : last, 'what is kept reaches the newest');
    return found.length;
  }
  return 0;
}

test('the messages kept are bounded over all bridges; the bridge keeping the most gives up its oldest first', () => {
  const recent = new RecentMessages(1);
  let seq = 0;
  const append = (bridge: string, count: number, bytes?: number) =>
    recent.add(
      Array.from({ length: count }, () => entry(bridge, bytes)),
      Array.from({ length: count }, () => ++seq),
    );
  append('a', 3000);
  append('b', 3000);
  assert.equal(kept(recent, 'a', 1, 3000), 2048);
  assert.equal(kept(recent, 'b', 3001, 6000), 2048);
  // Bytes bound it too, taken from the bridge keeping the most bytes: of five payloads of
  // 1 MiB, the newest three are kept, and the small messages of the others stay but for one
  // at most for each new message, which the count takes.
  append('c', 5, 1024 * 1024);
  assert.equal(kept(recent, 'c', 6001, 6005), 3);
  const small = kept(recent, 'a', 1, 3000) + kept(recent, 'b', 3001, 6000);
  assert.ok(small >= 4096 - 5 && small <= 4096 - 3, `${small} small messages kept`);
});

test("another connection's commit (a new data_version) lets everything go", () => {
  const recent = new RecentMessages(7);
  recent.add([entry('a'), entry('a')], [1, 2]);
  assert.equal(recent.read('a', 0, 10, 7)?.length, 2);
  assert.equal(recent.read('a', 0, 10, 8), undefined);
  assert.equal(recent.read('a', 0, 10, 8), undefined);
});

test('a bridge that keeps dropping its oldest, one per append and in releases, answers each read as its rows would', () => {
  const recent = new RecentMessages(1);
  let seq = 0;
  // A sink far behind: each append at the bound drops the oldest, many thousand times over.
  for (let i = 0; i < 20_000; i++) recent.add([entry('a')], [++seq]);
  for (const after of [0, 15_903, 15_904, 15_905, 19_000, 19_999, 20_000]) {
    const found = recent.read('a', after, 10, 1);
    if (after < 20_000 - 4096) assert.equal(found, undefined, `after ${after}: let go`);
    else
      assert.deepEqual(
        found?.map((m) => m.seq),
        Array.from({ length: Math.min(10, 20_000 - after) }, (_, i) => after + 1 + i),
        `after ${after}`,
      );
  }
  // Released in steps up to the newest but one: what stays is read from memory, the rest is gone.
  for (let through = 16_000; through < 20_000; through += 7) recent.release('a', through);
  recent.release('a', 19_999);
  assert.deepEqual(
    recent.read('a', 19_999, 10, 1)?.map((m) => m.seq),
    [20_000],
  );
  assert.equal(recent.read('a', 19_998, 10, 1), undefined);
  // The bridge fills up again from there, all of it kept up to the bound.
  for (let i = 0; i < 5000; i++) recent.add([entry('a')], [++seq]);
  assert.equal(kept(recent, 'a', 20_000, seq), 4096);
});
