// The memory src/buffer/recent.ts keeps of the messages just appended is bounded over all
// bridges (4,096 messages, 4 MiB of payload): a gateway whose sinks are all down does not keep
// every bridge's last messages, and what was let go is read from the database again (a read
// answers undefined for it). A bridge whose messages are let go before any read took them keeps
// nothing until a reader comes near its newest row. test/integration/buffer-recent.test.ts
// checks its answers against a real buffer.
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

/** Appends `count` messages to the bridge in batches, each read from memory by a sink that keeps up, as the bridge's sink does. */
function appendRead(recent: RecentMessages, next: () => number, bridge: string, count: number, bytes?: number, batch = 100): void {
  for (let done = 0; done < count; done += batch) {
    const seqs = Array.from({ length: Math.min(batch, count - done) }, next);
    recent.add(
      seqs.map(() => entry(bridge, bytes)),
      seqs,
    );
    recent.read(bridge, (seqs[0] as number) - 1, seqs.length, 1);
  }
}

test('the messages kept are bounded over all bridges; the bridge keeping the most gives up its oldest first', () => {
  const recent = new RecentMessages(1);
  let seq = 0;
  // Every message let go was read first.
  const append = (bridge: string, count: number, bytes?: number, batch?: number) => appendRead(recent, () => ++seq, bridge, count, bytes, batch);
  append('a', 3000);
  append('b', 3000);
  assert.equal(kept(recent, 'a', 1, 3000), 2048);
  assert.equal(kept(recent, 'b', 3001, 6000), 2048);
  // Bytes bound it too, taken from the bridge keeping the most bytes: of five payloads of
  // 1 MiB, the newest three are kept, and the small messages of the others stay but for one
  // at most for each new message, which the count takes.
  append('c', 5, 1024 * 1024, 1);
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
  // A sink that reads each message from memory but confirms none: each append at the bound
  // drops the oldest, many thousand times over.
  for (let i = 0; i < 20_000; i++) {
    recent.add([entry('a')], [++seq]);
    recent.read('a', seq - 1, 10, 1);
  }
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
  for (let i = 0; i < 5000; i++) {
    recent.add([entry('a')], [++seq]);
    recent.read('a', seq - 1, 10, 1);
  }
  assert.equal(kept(recent, 'a', 20_000, seq), 4096);
});

test('a bridge whose messages are let go before any read took them keeps nothing until a reader comes near its newest row', () => {
  const recent = new RecentMessages(1);
  let seq = 0;
  const append = (bridge: string, count: number) =>
    recent.add(
      Array.from({ length: count }, () => entry(bridge)),
      Array.from({ length: count }, () => ++seq),
    );
  // Its sink far behind (a flood, an outage): the first message let go unread stops the keeping.
  append('a', 4097);
  assert.equal(recent.read('a', 0, 100, 1), undefined);
  // Another bridge read from memory has the whole bound, and keeps it while a gets more rows.
  appendRead(recent, () => ++seq, 'b', 5000);
  append('a', 10);
  assert.equal(recent.read('a', 1000, 100, 1), undefined, 'far behind: read from the database');
  append('a', 10);
  assert.equal(recent.read('a', 5000, 100, 1), undefined);
  assert.equal(kept(recent, 'b', 4098, 9097), 4096);
  // A read within 1,024 rows of the newest: the bridge is kept again from its next append on.
  const newest = seq;
  assert.equal(recent.read('a', newest - 1024, 100, 1), undefined);
  append('a', 3);
  assert.deepEqual(
    recent.read('a', newest, 100, 1)?.map((m) => m.seq),
    [newest + 1, newest + 2, newest + 3],
  );
  assert.equal(recent.read('a', newest - 1, 100, 1), undefined, 'the rows before it are read from the database');
});
