// The gateway's buffer stats (`/api/status`, `/metrics`, the status page every 2 s) count each
// sink's backlog once and then keep what the sink confirmed as its cursor moves and rows leave,
// so a sink halfway through a long backlog is not counted row by row on every call. The kept
// figures must always equal a count of the rows: checked here after every step of seeded random
// runs of everything that moves a cursor or removes rows.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import { bufferPath, openBuffer } from '../../src/buffer/open.ts';
import { BufferStore, type StoredMessage } from '../../src/buffer/store.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import { openSqlite } from '../../src/sqlite/connection.ts';
import { random } from '../harness/random.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-buffer-kept-');

const origin = { source: 'test', qos: 1 } as const;
let clock = 0;
const message = (size: number) => createEnvelope({ topic: 't', payload: Buffer.alloc(size, 'x'), origin, timestamp: ++clock });

/** The kept stats of `bridge` against the stats counted from its rows: every figure the same. */
function assertKeptMatches(store: BufferStore, bridge: string, step: string): void {
  const kept = store.stats(bridge, { kept: true });
  const counted = store.stats(bridge);
  const figures = (s: typeof kept) => ({
    messages: s.messages,
    bytes: s.bytes,
    deadLetters: s.deadLetters,
    sinks: s.sinks.map(({ sink, pending, pendingBytes, oldestPendingAt, deadLetters }) => ({ sink, pending, pendingBytes, oldestPendingAt, deadLetters })),
  });
  assert.deepEqual(figures(kept), figures(counted), `after ${step}`);
}

function run(seed: number): void {
  const next = random(seed);
  const { store } = openBuffer(tempDir(), pino({ level: 'silent' }));
  const sinks = ['kafka', 'history', 'postgres'];
  store.registerBridge('b', sinks);
  store.registerBridge('other', ['s']);
  store.registerBridge('single', ['only']);
  const seqsAbove = (bridge: string, after: number, upTo = Number.POSITIVE_INFINITY) =>
    store
      .read(bridge, after, 10_000)
      .map((m) => m.seq)
      .filter((seq) => seq <= upTo);
  try {
    for (let step = 0; step < 400; step++) {
      const sink = sinks[next(sinks.length)] as string;
      const state = store.cursorState('b', sink);
      const op = next(16);
      let did = '';
      if (op <= 2) {
        const count = 1 + next(40);
        store.append(Array.from({ length: count }, () => ({ bridge: next(4) === 0 ? 'other' : 'b', envelope: message(1 + next(300)) })));
        did = `append ${count}`;
      } else if (op <= 5) {
        // A window confirmed: under live-first, the backlog part only (at or below the mark).
        const above = seqsAbove('b', state.seq, state.liveMark ?? Number.POSITIVE_INFINITY);
        if (above.length > 0) store.commit('b', sink, above[Math.min(above.length - 1, next(30))] as number);
        did = `commit ${sink}`;
      } else if (op === 6 && (state.liveMark === null || next(4) === 0)) {
        // (Ferry starts a live-first replay only when none runs; starting one over is checked too.)
        const tail = store.tail('b');
        if (tail > state.seq) store.startLive('b', sink, tail);
        did = `startLive ${sink}`;
      } else if (op === 7 && state.liveMark !== null) {
        const live = seqsAbove('b', Math.max(state.liveSeq ?? 0, state.seq));
        if (live.length > 0) store.commitLive('b', sink, live[Math.min(live.length - 1, next(20))] as number);
        did = `commitLive ${sink}`;
      } else if (op === 8 && state.liveMark !== null) {
        store.endLive('b', sink);
        did = `endLive ${sink}`;
      } else if (op === 9) {
        const live = state.liveMark !== null && next(2) === 0;
        const [first] = store.read('b', live ? Math.max(state.liveSeq ?? 0, state.seq) : state.seq, 1);
        if (first !== undefined && (live || state.liveMark === null || first.seq <= state.liveMark)) store.deadLetter(sink, first, 'refused', 1, live);
        did = `deadLetter ${sink}${live ? ' (live)' : ''}`;
      } else if (op === 10) {
        store.expire('b', clock - 50 - next(200), next(2) === 0 ? -1 : 1 + next(20));
        did = 'expire';
      } else if (op === 11) {
        store.dropOldest('b', 1 + next(15));
        did = 'dropOldest';
      } else if (op === 12) {
        const [oldest] = store.read('b', 0, 1);
        if (oldest !== undefined) store.purgeSome('b', oldest.seq + next(60), 1 + next(25));
        did = 'purgeSome';
      } else if (op === 13) {
        // Messages refused at ingress go straight to a sink's dead letters.
        store.append(Array.from({ length: 1 + next(5) }, () => ({ bridge: 'b', envelope: message(10), deadLetter: { sink, reason: 'too large' } })));
        store.trimDeadLetters('b', 20 + next(20), 1 + next(10));
        did = 'dead letters at ingress, trimmed';
      } else if (op === 14) {
        store.purgeDeadLetters('b', store.lastDeadLetter('b') - next(10), 1 + next(5));
        did = 'purgeDeadLetters';
      } else {
        store.redriveSome('b', store.lastDeadLetter('b') - next(10), 1 + next(5));
        did = 'redriveSome';
      }
      assertKeptMatches(store, 'b', `step ${step}: ${did} (seed ${seed})`);
      assertKeptMatches(store, 'other', `step ${step}: ${did} (seed ${seed})`);

      // A bridge with one sink whose handler settles messages ahead of its cursor.
      store.append([{ bridge: 'single', envelope: message(1 + next(100)) }]);
      const ahead = store.read('single', store.cursor('single', 'only'), 20);
      if (ahead.length > 2 && next(3) === 0) {
        store.settleAhead(
          'single',
          'only',
          [ahead[2] as (typeof ahead)[number]],
          next(2) === 0 ? [{ message: ahead[1] as (typeof ahead)[number], reason: 'bad', attempts: 1 }] : [],
        );
      } else if (ahead.length > 0 && next(3) === 0) store.commit('single', 'only', (ahead[0] as (typeof ahead)[number]).seq);
      assertKeptMatches(store, 'single', `step ${step}: single (seed ${seed})`);
    }
  } finally {
    store.close();
  }
}

test('kept buffer stats equal the rows counted, through appends, commits, live-first replay, dead letters (and their trims, purges and redrives), expiry, drops, purges and settles ahead', () => {
  for (const seed of [1, 2, 3, 4, 5, 6]) run(seed);
});

test('kept buffer stats follow a sink that is added, one that is removed, and rows and dead letters another process deleted', () => {
  const dir = tempDir();
  const { store } = openBuffer(dir, pino({ level: 'silent' }));
  try {
    store.registerBridge('b', ['a', 'c']);
    const seqs = store.append(Array.from({ length: 500 }, (_, i) => ({ bridge: 'b', envelope: message(1 + (i % 50)) })));
    store.commit('b', 'a', seqs[249] as number);
    assertKeptMatches(store, 'b', 'the first stats');
    store.registerBridge('b', ['a', 'c', 'late']);
    store.commit('b', 'c', seqs[99] as number);
    assertKeptMatches(store, 'b', 'a sink added');
    store.registerBridge('b', ['a', 'late']);
    assertKeptMatches(store, 'b', "a sink removed (its rows below the others' cursors released)");

    // `ferry buffer purge` in another process: the next kept stats find the change and count again.
    const other = openSqlite(bufferPath(dir));
    new BufferStore(other).purgeSome('b', seqs[399] as number, 1_000);
    assertKeptMatches(store, 'b', 'rows deleted by another process');
    // `ferry buffer redrive` in another process: a dead letter back into the log.
    store.deadLetter('a', (store.read('b', store.cursor('b', 'a'), 1) as StoredMessage[])[0] as StoredMessage, 'bad', 1);
    assertKeptMatches(store, 'b', 'a dead letter');
    other.prepare('DELETE FROM dead_letters WHERE bridge = ?').run('b');
    other.close();
    assertKeptMatches(store, 'b', 'dead letters deleted by another process');
    store.commit('b', 'a', seqs[449] as number);
    assertKeptMatches(store, 'b', 'a commit after the recount');
  } finally {
    store.close();
  }
});

test('a sink halfway through a backlog: the kept stats count its rows once, then count nothing on each call', () => {
  const { store } = openBuffer(tempDir(), pino({ level: 'silent' }));
  // Every count the store makes goes through its packs' count (protected in TypeScript only): recorded here.
  const counts: string[] = [];
  const target = (store as unknown as { packs: { count(bridge: string, lo: number, hi: number): unknown } }).packs;
  const count = target.count.bind(target);
  target.count = (bridge, lo, hi) => {
    counts.push(`(${lo}, ${hi}]`);
    return count(bridge, lo, hi);
  };
  try {
    store.registerBridge('b', ['kafka', 'history']);
    for (let i = 0; i < 10; i++) store.append(Array.from({ length: 10_000 }, () => ({ bridge: 'b', envelope: message(200) })));
    const [first] = store.read('b', 0, 1);
    const middle = (first?.seq ?? 0) + 50_000;
    store.commit('b', 'kafka', middle);
    store.stats('b', { kept: true });
    counts.length = 0;
    const kept = store.stats('b', { kept: true });
    assert.deepEqual(counts, [], 'a second call counts no rows');
    assert.equal(kept.sinks.find((s) => s.sink === 'kafka')?.pending, 49_999);
    // A window confirmed: only its rows are counted, and the figures stay right.
    store.commit('b', 'kafka', middle + 500);
    // The window it confirmed, and the messages every sink is past (what the commit releases: none here).
    const history = store.cursor('b', 'history');
    assert.deepEqual(counts, [`(${middle}, ${middle + 500}]`, `(-Infinity, ${history}]`]);
    assert.deepEqual(store.stats('b', { kept: true }).sinks, store.stats('b').sinks);
  } finally {
    store.close();
  }
});
