import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import type { Observable, map } from 'rxjs';
import pino from 'pino';
import { bufferPolicySchema } from '../../src/buffer/config.ts';
import { bufferPath, openBuffer } from '../../src/buffer/open.ts';
import { cursorSource } from '../../src/buffer/reader.ts';
import type { BufferStore } from '../../src/buffer/store.ts';
import type { Delivery } from '../../src/core/delivery.ts';
import { FerryError } from '../../src/core/errors.ts';
import type { SinkEvent } from '../../src/core/stream.ts';
import { batchingSink } from '../../src/core/batching-sink.ts';
import { trackedDeliveries } from '../conformance/deliveries.ts';
import { bufferSetup, payloads, until } from '../harness/buffer-setup.ts';
import { tempDirs } from '../harness/temp.ts';

const logger = pino({ level: 'silent' });
const tempDir = tempDirs('ferry-buffer-');
const setup = bufferSetup(tempDir);

test('deliveries of one turn are committed together and acked only once the rows are on disk', async () => {
  const { dir, store, writer, cleanup } = setup();
  try {
    const tracked = trackedDeliveries(500);
    const reader = new Database(bufferPath(dir), { readonly: true });
    const visibleAtAck: number[] = [];
    for (const d of tracked.deliveries) {
      const ack = d.ack.bind(d);
      writer.enqueue('b', {
        ...d,
        ack: () => (visibleAtAck.push((reader.prepare('SELECT coalesce(sum(last - first + 1), 0) AS n FROM packs').get() as { n: number }).n), ack()),
        nack: d.nack.bind(d),
        state: d.state,
      });
    }
    assert.equal(tracked.acked.length, 0, 'acked before the commit');
    await tracked.settled();
    reader.close();
    assert.equal(tracked.acked.length, 500);
    assert.ok(
      visibleAtAck.every((n) => n === 500),
      'every ack came after all 500 rows were committed',
    );
    assert.deepEqual(store.usage('b'), { messages: 500, bytes: tracked.deliveries.reduce((n, d) => n + d.envelope.payload.byteLength, 0) });
  } finally {
    cleanup();
  }
});

test('commitDelayMs: messages that arrive within it after a commit share the next commit, acked after it; the first after a quiet spell goes at once', async () => {
  const turn = () => new Promise<void>((resolve) => setImmediate(resolve));
  for (const commitDelayMs of [0, 800]) {
    const { store, writer, cleanup } = setup({}, ['out'], { commitDelayMs });
    const appends: number[] = [];
    const append = store.append.bind(store);
    store.append = (entries, after) => {
      appends.push(entries.length);
      return append(entries, after);
    };
    try {
      const first = trackedDeliveries(1);
      writer.enqueue('b', first.deliveries[0] as Delivery);
      await turn();
      assert.deepEqual(appends, [1], `commitDelayMs ${commitDelayMs}: the first message is committed at the next turn`);
      // Five more, one per turn, right after that commit.
      const more = trackedDeliveries(5);
      for (const d of more.deliveries) {
        writer.enqueue('b', d);
        await turn();
      }
      if (commitDelayMs === 0) assert.deepEqual(appends, [1, 1, 1, 1, 1, 1], 'without a delay each turn commits its own');
      else {
        assert.deepEqual(appends, [1], 'within the delay nothing more is committed');
        assert.equal(more.acked.length, 0, 'and nothing acknowledged');
      }
      await more.settled();
      assert.equal(more.acked.length, 5);
      if (commitDelayMs > 0) assert.deepEqual(appends, [1, 5], 'the five share one commit');
      assert.equal(store.usage('b').messages, 6);
    } finally {
      cleanup();
    }
  }
});

test('each sink reads at its own pace; a failing sink holds back neither the other sink nor order', async () => {
  const { store, writer, counters, drain, cleanup } = setup({}, ['fast', 'broken']);
  try {
    const tracked = trackedDeliveries(50);
    for (const d of tracked.deliveries) writer.enqueue('b', d);
    await tracked.settled();
    const fast = drain('fast');
    // The first three attempts at the first window fail, as an upstream that is down would.
    let attempts = 0;
    const first = tracked.deliveries[0]?.envelope.id;
    const broken = drain('broken', (d) => {
      if (d.envelope.id === first) attempts += 1;
      return attempts <= 3 ? new Error('upstream down') : undefined;
    });
    await until(() => store.stats('b').sinks.find((s) => s.sink === 'fast')?.pending === 0, 'the fast sink');
    await until(() => store.stats('b').sinks.find((s) => s.sink === 'broken')?.pending === 0, 'the broken sink to recover');
    assert.deepEqual(fast.seen, payloads(tracked.deliveries));
    // The broken sink saw the first window fail 3 times, then everything in order.
    assert.deepEqual(broken.seen.slice(-50), payloads(tracked.deliveries));
    assert.equal(counters.get('buffer.retries{bridge=b,sink=broken}'), 3);
    assert.equal(store.usage('b').messages, 0, 'released once both sinks were past');
  } finally {
    cleanup();
  }
});

test('overflow refuse: holds what does not fit unacknowledged, stores it in order once space frees', async () => {
  const { store, writer, counters, drain, cleanup } = setup({ maxMessages: 10, overflow: 'refuse' });
  try {
    const tracked = trackedDeliveries(15);
    for (const d of tracked.deliveries) writer.enqueue('b', d);
    await until(() => tracked.acked.length === 10, '10 acks');
    await sleep(50);
    assert.equal(tracked.acked.length, 10);
    assert.equal(writer.held, 5);
    assert.equal(writer.state, 'refusing');
    assert.equal(counters.get('buffer.refused'), 5);
    const out = drain('out');
    await tracked.settled();
    await until(() => out.seen.length === 15, 'all 15 delivered');
    assert.deepEqual(out.seen, payloads(tracked.deliveries));
    assert.equal(tracked.nacked.size, 0);
    assert.equal(writer.state, 'ok');
    await until(() => store.usage('b').messages === 0, 'release');
  } finally {
    cleanup();
  }
});

test('overflow refuse: buffer.refused counts each held message once, however often it is tried again', { timeout: 20_000 }, async () => {
  const { store, writer, counters, drain, cleanup } = setup({ maxMessages: 3, overflow: 'refuse' });
  // Each try of the held messages counts the bridge's usage once (the first held one does not fit, the rest wait behind it).
  let usageCalls = 0;
  const usage = store.usage.bind(store);
  store.usage = (bridge) => {
    usageCalls += 1;
    return usage(bridge);
  };
  try {
    // One device's 10 messages while the sink is down: 3 fit, 7 are held.
    const tracked = trackedDeliveries(12);
    const first = tracked.deliveries.slice(0, 10);
    for (const d of first) writer.enqueue('b', d);
    await until(() => tracked.acked.length === 3 && writer.held === 7, '3 stored, 7 held');
    assert.equal(counters.get('buffer.refused'), 7);
    let since = usageCalls;
    await until(() => usageCalls >= since + 2, 'two retries of the held messages', 10_000);
    // Two more arrive while the bridge is held: refused (behind the others) once each as well.
    for (const d of tracked.deliveries.slice(10)) writer.enqueue('b', d);
    await until(() => writer.held === 9, '9 held');
    since = usageCalls;
    await until(() => usageCalls >= since + 2, 'two more retries', 10_000);
    assert.equal(writer.state, 'refusing');
    assert.equal(counters.get('buffer.refused'), 9, 'each of the 9 messages refused counted once');
    const out = drain('out');
    await tracked.settled();
    await until(() => out.seen.length === 12, 'all 12 delivered');
    assert.deepEqual(out.seen, payloads(tracked.deliveries));
    assert.equal(counters.get('buffer.refused'), 9);
    assert.equal(counters.get('buffer.appended'), 12, 'the refused ones counted as appended once stored');
  } finally {
    cleanup();
  }
});

test('held messages whose sender left are dropped, not stored; later ones are stored in their place (issue 16, item 9)', async () => {
  const { writer, counters, drain, cleanup } = setup({ maxMessages: 10, overflow: 'refuse' });
  try {
    let gone = false;
    const tracked = trackedDeliveries(15);
    const abandonable = (d: Delivery): Delivery => ({
      envelope: d.envelope,
      ack: d.ack,
      nack: d.nack,
      get state() {
        return d.state;
      },
      abandoned: () => gone,
    });
    for (const d of tracked.deliveries) writer.enqueue('b', abandonable(d));
    await until(() => writer.held === 5, '5 held');
    // The device's connection closes: it resends the 5 under new deliveries, which wait behind.
    gone = true;
    const resent = trackedDeliveries(5);
    for (const d of resent.deliveries) writer.enqueue('b', d);
    await until(() => tracked.nacked.size === 5, 'the abandoned 5 nacked', 3000);
    assert.equal(counters.get('buffer.abandoned{bridge=b}'), 5);
    assert.equal(writer.held, 5, 'only the resent copies are held');
    const out = drain('out');
    await resent.settled();
    await until(() => out.seen.length === 15, '15 delivered');
    assert.deepEqual(out.seen, [...payloads(tracked.deliveries.slice(0, 10)), ...payloads(resent.deliveries)]);
    // A delivery abandoned before its commit is not stored either.
    const late = trackedDeliveries(1);
    writer.enqueue('b', abandonable(late.deliveries[0] as Delivery));
    await late.settled();
    assert.equal(late.nacked.size, 1);
    assert.equal(counters.get('buffer.abandoned{bridge=b}'), 6);
  } finally {
    cleanup();
  }
});

test('overflow drop-oldest and drop-newest keep the limit and count every drop', async () => {
  for (const overflow of ['drop-oldest', 'drop-newest'] as const) {
    const { store, writer, counters, drain, cleanup } = setup({ maxMessages: 10, overflow });
    try {
      const tracked = trackedDeliveries(15);
      for (const d of tracked.deliveries) writer.enqueue('b', d);
      await tracked.settled();
      assert.equal(tracked.acked.length, 15, `${overflow}: all acknowledged`);
      assert.equal(store.usage('b').messages, 10);
      assert.equal(counters.get(`buffer.dropped{bridge=b,reason=${overflow}}`), 5);
      const out = drain('out');
      await until(() => out.seen.length === 10, 'delivery');
      const all = payloads(tracked.deliveries);
      assert.deepEqual(out.seen, overflow === 'drop-oldest' ? all.slice(5) : all.slice(0, 10));
    } finally {
      cleanup();
    }
  }
});

test('messages older than maxAgeMs are expired and counted', async () => {
  const { store, writer, cleanup } = setup();
  try {
    const old = trackedDeliveries(4);
    const fresh = trackedDeliveries(6);
    store.append(old.deliveries.map((d) => ({ bridge: 'b', envelope: { ...d.envelope, timestamp: Date.now() - 60_000 } })));
    for (const d of fresh.deliveries) writer.enqueue('b', d);
    await fresh.settled();
    const removed = store.expire('b', Date.now() - 30_000);
    assert.deepEqual(removed.messages, 4);
    assert.equal(store.usage('b').messages, 6);
  } finally {
    cleanup();
  }
});

test('expiry takes messages from the front of the log, in the order they came; the oldest age is the first message', () => {
  const { store, cleanup } = setup();
  try {
    const now = Date.now();
    // Ages in log order: 60 s, 50 s, then a message stamped 1 s ago (a clock set back, say), then 40 s.
    const ages = [60_000, 50_000, 1_000, 40_000];
    store.append(trackedDeliveries(ages.length).deliveries.map((d, i) => ({ bridge: 'b', envelope: { ...d.envelope, timestamp: now - (ages[i] as number) } })));
    assert.equal(store.stats('b').oldestAt, now - 60_000);
    // At most one per call: the first only.
    assert.equal(store.expire('b', now - 30_000, 1).messages, 1);
    assert.equal(store.stats('b').oldestAt, now - 50_000);
    // The 40 s old message waits behind the newer one.
    assert.equal(store.expire('b', now - 30_000).messages, 1);
    assert.equal(store.usage('b').messages, 2);
    assert.equal(store.stats('b').oldestAt, now - 1_000);
    assert.equal(store.expire('b', now - 30_000).messages, 0);
    // Once the newer one is old enough too, both go.
    assert.equal(store.expire('b', now).messages, 2);
    assert.equal(store.stats('b').oldestAt, null);
  } finally {
    cleanup();
  }
});

test('a message rejected for good is dead-lettered with its reason and the sink moves on', async () => {
  const { store, writer, counters, drain, cleanup } = setup();
  try {
    const tracked = trackedDeliveries(5);
    for (const d of tracked.deliveries) writer.enqueue('b', d);
    await tracked.settled();
    const bad = tracked.deliveries[2]?.envelope.id;
    const out = drain('out', (d) => (d.envelope.id === bad ? new FerryError('MESSAGE_REJECTED', 'payload is not JSON', { retryable: false }) : undefined));
    await until(() => store.stats('b').sinks[0]?.pending === 0, 'the sink to pass the bad message');
    const letters = [...store.iterateDeadLetters('b')];
    assert.deepEqual(
      letters.map((l) => [l.envelope.id, l.sink, l.reason, l.attempts]),
      [[bad, 'out', 'payload is not JSON', 1]],
    );
    assert.equal(counters.get('buffer.dead_letters{bridge=b,sink=out}'), 1);
    const good = payloads(tracked.deliveries.filter((d) => d.envelope.id !== bad));
    assert.deepEqual(
      [...new Set(out.seen)].filter((p) => good.includes(p)),
      good,
    );
    assert.equal(store.redriveSome('b', store.lastDeadLetter('b'), 100), 1);
    await until(() => store.stats('b').sinks[0]?.pending === 0 && [...store.iterateDeadLetters('b')].length === 1, 'the redriven message to be rejected again');
  } finally {
    cleanup();
  }
});

test('disk full: new messages are held unacknowledged and stored once space returns', async () => {
  const { store, writer, counters, cleanup } = setup();
  try {
    const pages = (store.pragma('page_count', { simple: true }) as number) + 1;
    store.pragma(`max_page_count = ${pages}`);
    const tracked = trackedDeliveries(200);
    for (const d of tracked.deliveries) writer.enqueue('b', { ...d, envelope: { ...d.envelope, payload: Buffer.alloc(2000, 1) } } as Delivery);
    await until(() => writer.state === 'disk-full', 'disk-full');
    assert.equal(tracked.acked.length, 0);
    assert.equal(tracked.nacked.size, 0);
    assert.ok((counters.get('buffer.errors{reason=disk_full}') ?? 0) >= 1);
    store.pragma('max_page_count = 1073741823');
    await tracked.settled();
    assert.equal(tracked.acked.length, 200);
    assert.equal(writer.state, 'ok');
    assert.equal(store.usage('b').messages, 200);
  } finally {
    cleanup();
  }
});

test('a write error other than disk full holds messages unacknowledged, in order, until writes work again', async () => {
  const { store, writer, counters, drain, cleanup } = setup();
  try {
    store.pragma('query_only = 1');
    const first = trackedDeliveries(5);
    for (const d of first.deliveries) writer.enqueue('b', d);
    await until(() => writer.state === 'write-failed', 'write-failed');
    const second = trackedDeliveries(5);
    for (const d of second.deliveries) writer.enqueue('b', d);
    await sleep(20);
    assert.equal(first.acked.length + first.nacked.size + second.acked.length + second.nacked.size, 0);
    assert.equal(counters.get('buffer.errors{reason=append_failed}'), 1);
    store.pragma('query_only = 0');
    await first.settled();
    await second.settled();
    assert.equal(writer.state, 'ok');
    const out = drain('out');
    await until(() => out.seen.length === 10, 'delivery');
    assert.deepEqual(out.seen, [...payloads(first.deliveries), ...payloads(second.deliveries)]);
  } finally {
    cleanup();
  }
});

/** A sink writing batches of 10 to `destination`, failing a batch when `refuse` says so. */
function batchSink(destination: string[], refuse: (batch: readonly Delivery[]) => Error | undefined) {
  return batchingSink({ batchSize: 10, batchTimeMs: 5 }, async (batch) => {
    await sleep(2);
    const error = refuse(batch);
    if (error !== undefined) throw error;
    destination.push(...payloads(batch));
  });
}

test('a batch that fails once does not let the later batches of its window overtake it', async () => {
  const { store, writer, counters, cleanup } = setup({ retryInitialMs: 10 });
  const tracked = trackedDeliveries(30);
  for (const d of tracked.deliveries) writer.enqueue('b', d);
  await tracked.settled();
  const destination: string[] = [];
  let calls = 0;
  const sink = batchSink(destination, () => (++calls === 1 ? new FerryError('SINK_WRITE_FAILED', 'transient', { retryable: true }) : undefined));
  const reader = cursorSource({ store, writer, bridge: 'b', sink: 'out', policy: bufferPolicySchema().parse({ retryInitialMs: 10 }), logger, counters });
  const subscription = sink(reader.deliveries).subscribe();
  try {
    await until(() => store.stats('b').sinks[0]?.pending === 0, 'delivery');
    assert.deepEqual(destination, payloads(tracked.deliveries));
  } finally {
    subscription.unsubscribe();
    cleanup();
  }
});

test('a permanent failure of a batch dead-letters only the message that caused it', async () => {
  const { store, writer, counters, cleanup } = setup();
  const tracked = trackedDeliveries(30);
  for (const d of tracked.deliveries) writer.enqueue('b', d);
  await tracked.settled();
  const bad = payloads(tracked.deliveries)[5] as string;
  const destination: string[] = [];
  const sink = batchSink(destination, (batch) => (payloads(batch).includes(bad) ? new FerryError('MESSAGE_REJECTED', 'refused for good', { retryable: false }) : undefined));
  const reader = cursorSource({ store, writer, bridge: 'b', sink: 'out', policy: bufferPolicySchema().parse({}), logger, counters });
  const subscription = sink(reader.deliveries).subscribe();
  try {
    await until(() => store.stats('b').sinks[0]?.pending === 0, 'delivery');
    assert.deepEqual(
      [...store.iterateDeadLetters('b')].map((l) => Buffer.from(l.envelope.payload).toString()),
      [bad],
    );
    assert.deepEqual(
      destination,
      payloads(tracked.deliveries).filter((p) => p !== bad),
    );
  } finally {
    subscription.unsubscribe();
    cleanup();
  }
});

test('a corrupt buffer is moved aside and a fresh one opened', () => {
  const dir = tempDir();
  writeFileSync(bufferPath(dir), Buffer.alloc(8192, 7));
  const { store, movedAside } = openBuffer(dir, logger);
  try {
    assert.ok(movedAside !== undefined && existsSync(movedAside));
    assert.equal(store.usage('x').messages, 0);
  } finally {
    store.close();
  }
});

test('live-first replay: after an outage new messages go first and the backlog drains behind them at its rate', async () => {
  const { store, writer, counters, drain, cleanup } = setup({ replay: 'live-first', windowSize: 10, backlogRatePerSec: 100 });
  try {
    const backlog = trackedDeliveries(60, 'devices/d1/telemetry/t', 'd1');
    for (const d of backlog.deliveries) writer.enqueue('b', d);
    await backlog.settled();
    const out = drain('out');
    await until(() => counters.get('buffer.live_first.started{bridge=b,sink=out}') === 1, 'live-first to start');
    await until(() => out.seen.length >= 10, 'some backlog');
    const fresh = trackedDeliveries(5, 'devices/d2/telemetry/t', 'd2');
    for (const d of fresh.deliveries) writer.enqueue('b', d);
    await fresh.settled();
    await until(() => store.stats('b').sinks[0]?.pending === 0 && store.cursorState('b', 'out').liveMark === null, 'the backlog to drain', 10_000);
    const all = [...payloads(backlog.deliveries), ...payloads(fresh.deliveries)];
    assert.deepEqual([...out.seen].sort(), [...all].sort(), 'every message exactly once');
    const lastBacklog = out.seen.indexOf(payloads(backlog.deliveries).at(-1) as string);
    for (const p of payloads(fresh.deliveries)) assert.ok(out.seen.indexOf(p) < lastBacklog, 'a new message waited for the backlog');
    assert.deepEqual(
      out.seen.filter((p) => payloads(backlog.deliveries).includes(p)),
      payloads(backlog.deliveries),
      'the backlog kept its order',
    );
    assert.deepEqual(
      out.seen.filter((p) => payloads(fresh.deliveries).includes(p)),
      payloads(fresh.deliveries),
      'the live stream kept its order',
    );
    assert.equal(counters.get('buffer.live_first.caught_up{bridge=b,sink=out}'), 1);
    assert.equal(store.usage('b').messages, 0);

    const after = trackedDeliveries(3, 'devices/d3/telemetry/t', 'd3');
    for (const d of after.deliveries) writer.enqueue('b', d);
    await until(() => out.seen.length === 68, 'arrival order again');
    assert.deepEqual(out.seen.slice(-3), payloads(after.deliveries));
  } finally {
    cleanup();
  }
});

test('after a restart each sink resumes from its cursor', async () => {
  const { dir, writer, drain, cleanup, store: store0 } = setup();
  const tracked = trackedDeliveries(20);
  for (const d of tracked.deliveries) writer.enqueue('b', d);
  await tracked.settled();
  const first = drain('out', (d) => (Number(JSON.parse(Buffer.from(d.envelope.payload).toString()).seq) >= 10 ? new Error('down') : undefined));
  await until(() => first.seen.length >= 11 && store0.usage('b').messages === 10, 'the first ten to be confirmed');
  cleanup();

  const { store } = openBuffer(dir, logger);
  try {
    assert.equal(store.usage('b').messages, 10);
    assert.deepEqual(
      store.read('b', store.cursor('b', 'out'), 100).map((m) => Buffer.from(m.envelope.payload).toString()),
      payloads(tracked.deliveries).slice(10),
    );
  } finally {
    store.close();
  }
});

// Keeps the imported types in use for the compiler's noUnusedLocals in type-only positions.
export type Unused = Observable<SinkEvent> | BufferStore | ReturnType<typeof map>;

test('a message its sink names alone as invalid is dead-lettered at once; the rest of its batch is written once', async () => {
  const { store, writer, counters, cleanup } = setup();
  const tracked = trackedDeliveries(30);
  for (const d of tracked.deliveries) writer.enqueue('b', d);
  await tracked.settled();
  const bad = payloads(tracked.deliveries)[15] as string;
  const destination: string[] = [];
  const sink = batchingSink({ batchSize: 10, batchTimeMs: 5 }, async (batch) => {
    await sleep(2);
    const rejected = new Map(batch.filter((d) => payloads([d])[0] === bad).map((d) => [d, new FerryError('MESSAGE_INVALID', 'no Kafka topic for it', { retryable: false })]));
    destination.push(...payloads(batch.filter((d) => !rejected.has(d))));
    return { rejected };
  });
  const events: SinkEvent[] = [];
  const reader = cursorSource({ store, writer, bridge: 'b', sink: 'out', policy: bufferPolicySchema().parse({}), logger, counters });
  const subscription = sink(reader.deliveries).subscribe((e) => events.push(e));
  try {
    await until(() => store.stats('b').sinks[0]?.pending === 0, 'delivery');
    const letters = [...store.iterateDeadLetters('b')];
    assert.deepEqual(
      letters.map((l) => [Buffer.from(l.envelope.payload).toString(), l.reason]),
      [[bad, 'no Kafka topic for it']],
    );
    // Written exactly once each, in order: no search re-sent the messages after the bad one.
    assert.deepEqual(
      destination,
      payloads(tracked.deliveries).filter((p) => p !== bad),
    );
    assert.deepEqual(
      events.filter((e) => e.type === 'failed').map((e) => [e.count, e.type === 'failed' && e.retryable]),
      [[1, false]],
    );
    assert.equal(counters.get('buffer.dead_letters{bridge=b,sink=out}'), 1);
  } finally {
    subscription.unsubscribe();
    cleanup();
  }
});

test('trimDeadLetters keeps the newest dead letters of a bridge up to the limit', async () => {
  const { store, writer, drain, cleanup } = setup();
  try {
    const tracked = trackedDeliveries(6);
    for (const d of tracked.deliveries) writer.enqueue('b', d);
    await tracked.settled();
    drain('out', () => new FerryError('MESSAGE_REJECTED', 'refused', { retryable: false }));
    await until(() => [...store.iterateDeadLetters('b')].length === 6, 'every message to be dead-lettered');
    assert.equal(store.trimDeadLetters('b', 10), 0);
    assert.equal(store.trimDeadLetters('b', 2), 4);
    const kept = [...store.iterateDeadLetters('b')].map((l) => l.envelope.id);
    assert.deepEqual(
      kept,
      tracked.deliveries.slice(4).map((d) => d.envelope.id),
    );
    assert.equal(store.trimDeadLetters('b', 0, 1), 1, 'at most `limit` at a time');
  } finally {
    cleanup();
  }
});

test('an idle reader keeps one wait for the next append, however many times it polls', async () => {
  const { writer, drain, cleanup } = setup();
  try {
    drain('out');
    // The reader polls every second while nothing arrives.
    await sleep(3500);
    assert.equal(writer.appendWaiters('b'), 1);
  } finally {
    cleanup();
  }
});
