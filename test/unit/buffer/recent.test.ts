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
