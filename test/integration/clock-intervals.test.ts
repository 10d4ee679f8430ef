// Intervals within a running gateway must not follow a step of the wall clock (NTP setting the
// clock of a gateway that booted without a real-time clock, a bad time source): a login block,
// the memory of resent messages, a sink's wait for an answer. The clock is stepped by replacing
// Date.now in this process: a real step of the clock cannot be made on a machine other services
// share, and the code under test read the wall clock through Date.now only.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import { NEVER } from 'rxjs';
import type { BufferPolicy } from '../../src/buffer/config.ts';
import { cursorSource } from '../../src/buffer/reader.ts';
import type { Delivery } from '../../src/core/delivery.ts';
import { InputTracker } from '../../src/handler/input-tracker.ts';
import { kafkaSink } from '../../src/kafka/sink.ts';
import { LossWatch, lossWatchSchema } from '../../src/mqtt/loss-watch.ts';
import { PubackWindow } from '../../src/mqtt/puback-window.ts';
import { WindowLimiter } from '../../src/mqtt/rate-limit.ts';
import { ResendMemory } from '../../src/mqtt/resend-memory.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { SinkSet } from '../../src/runtime/bridge-parts.ts';
import { HoldWatch } from '../../src/runtime/hold-watch.ts';
import type { RuntimeDeps } from '../../src/runtime/registry.ts';
import { trackedDeliveries } from '../conformance/deliveries.ts';
import { bufferSetup } from '../harness/buffer-setup.ts';
import { eventually } from '../harness/eventually.ts';
import { capturedLogger } from '../harness/log-lines.ts';
import { wallClock } from '../harness/fake-clock.ts';
import { tempDirs } from '../harness/temp.ts';

const DAY_MS = 86_400_000;
const YEAR_MS = 365 * DAY_MS;
const setup = bufferSetup(tempDirs('ferry-clock-intervals-'));

test('a login block is not lifted by the wall clock set a year forward', (t) => {
  const clock = wallClock(t);
  const limiter = new WindowLimiter({ max: 3, windowMs: 60_000, blockMs: 300_000 });
  for (let i = 0; i < 3; i++) limiter.record('guesser');
  assert.equal(limiter.blocked('guesser'), true);
  clock.step(YEAR_MS);
  assert.equal(limiter.blocked('guesser'), true, 'the block of a password-guessing client was lifted by a step of the clock');
});

test('a login block is not made longer by the wall clock set a day back', async (t) => {
  const clock = wallClock(t);
  const limiter = new WindowLimiter({ max: 2, windowMs: 60_000, blockMs: 100 });
  limiter.record('device');
  limiter.record('device');
  assert.equal(limiter.blocked('device'), true);
  clock.step(-DAY_MS);
  // Its 100 ms block ends by the monotonic clock; by the wall clock it would last a day.
  await eventually(() => assert.equal(limiter.blocked('device'), false, 'still blocked: the step back extended the block'), { timeoutMs: 5000 });
});

test('a resent message is still recognised after the wall clock was set a year forward', (t) => {
  const clock = wallClock(t);
  const memory = new ResendMemory({ windowMs: 600_000, maxEntries: 100 });
  memory.stored(memory.note('dev-1', 'u1', 7, 'devices/dev-1/t', Buffer.from('{"seq":1}')));
  clock.step(YEAR_MS);
  assert.ok(memory.lookup('dev-1', 'u1', 7, 'devices/dev-1/t', Buffer.from('{"seq":1}')), 'forgotten: its resend would be stored twice');
});

/** A sink holding one window of the buffer's messages unanswered (a hung upstream), and the SinkSet that watches it. */
async function hungSink(t: { after(fn: () => void): void }) {
  const { store, writer, counters, cleanup } = setup({ windowSize: 1 });
  const { logger } = capturedLogger();
  const stored = trackedDeliveries(1);
  for (const d of stored.deliveries) writer.enqueue('b', d);
  await stored.settled();
  const reader = cursorSource({ store, writer, bridge: 'b', sink: 'out', policy: writer.policy('b') as BufferPolicy, logger, counters });
  const held: Delivery[] = [];
  const subscription = reader.deliveries.subscribe((d) => held.push(d));
  // The sink itself takes nothing (NEVER) and so never connects: what is watched is the reader's window.
  const sinks = new SinkSet('b', logger, new CounterRegistry());
  sinks.add(
    'out',
    { kafka: kafkaSink.schema.parse({ brokers: ['127.0.0.1:9'], topic: 't' }) },
    NEVER,
    { logger, counters, bridge: 'b' } as never,
    {} as RuntimeDeps,
    'kept',
    () => reader.waitingSince,
  );
  t.after(() => {
    sinks.abort();
    subscription.unsubscribe();
    cleanup();
  });
  await eventually(() => assert.equal(held.length, 1));
  return sinks;
}

test('a sink with a window in flight is not reported stalled because the wall clock was set a year forward', async (t) => {
  const clock = wallClock(t);
  const sinks = await hungSink(t);
  assert.deepEqual(sinks.problems(Date.now(), 10_000), []);
  clock.step(YEAR_MS);
  assert.deepEqual(
    sinks.problems(Date.now(), 10_000).map((p) => p.problem),
    [],
    'reported stalled after a step of the clock, though it has waited for less than a second',
  );
});

test('a hung sink is reported stalled though the wall clock was set a day back', async (t) => {
  const clock = wallClock(t);
  const sinks = await hungSink(t);
  clock.step(-DAY_MS);
  await eventually(
    () =>
      assert.deepEqual(
        sinks.problems(Date.now(), 200).map((p) => p.problem),
        ['stalled'],
        'the step back hid a hung sink',
      ),
    { timeoutMs: 5000 },
  );
  const [problem] = sinks.problems(Date.now(), 200);
  // `since` is a time of day for the status page: by the wall clock as it reads now.
  assert.ok((problem?.since ?? 0) <= Date.now() && (problem?.since ?? 0) > Date.now() - 60_000, `since ${problem?.since} is not a moment ago by the wall clock`);
});

test('an MQTT source is not reported behind its broker because the wall clock was set a day forward', (t) => {
  const clock = wallClock(t);
  const window = new PubackWindow();
  const lines: { level: number; msg: string }[] = [];
  const counters = new CounterRegistry();
  const watch = new LossWatch({
    config: lossWatchSchema().parse({ behindAfterMs: 5_000 }),
    clientId: 'ferry-a',
    broker: 'mqtt://broker',
    bridge: 'b',
    maxInFlight: 100,
    logger: pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as { level: number; msg: string }) }),
    counters,
    window: () => ({ pending: window.pending, oldestAt: window.oldestAt }),
  });
  watch.connection(true);
  // A message read a moment ago, waiting for the buffer.
  window.add({ destroyed: false, writable: true, write: () => true }, 1);
  clock.step(DAY_MS);
  watch.tick();
  assert.deepEqual(
    lines.filter((l) => l.level === 40).map((l) => l.msg),
    [],
    'warned behind after a step of the clock',
  );
  assert.equal(counters.get('mqtt.client.behind{bridge=b}'), 0);
  const status = watch.status();
  assert.equal(status.behindForMs, undefined);
  assert.ok(status.oldestUnackedAgeMs < 60_000, `oldest unacknowledged message ${status.oldestUnackedAgeMs} ms old`);
});

// The steady clock reads fractions of a millisecond; times and ages shown in /api/status and
// /readyz are whole milliseconds, as they were by the wall clock (a client may read them as
// integers). No step of the clock is needed for these.
test("a stalled sink's since is whole milliseconds since the epoch", async (t) => {
  const sinks = await hungSink(t);
  const [problem] = sinks.problems(Date.now(), 0);
  assert.equal(problem?.problem, 'stalled');
  assert.ok(Number.isInteger(problem?.since), `since ${problem?.since} is not whole milliseconds`);
});

test('the age of the oldest message a handler holds is whole milliseconds', async (t) => {
  const tracker = new InputTracker({ onSettle: () => {}, onRelease: () => {} });
  const hold = new HoldWatch({ name: 'b', maxHoldMs: 60_000, onHoldTimeout: 'warn' }, tracker, capturedLogger().logger, new CounterRegistry());
  t.after(() => hold.stop());
  tracker.track(trackedDeliveries(1).deliveries[0] as Delivery);
  await new Promise((resolve) => setTimeout(resolve, 5));
  const { count, oldestAgeMs } = hold.status();
  assert.equal(count, 1);
  assert.ok(oldestAgeMs > 0, 'no age measured');
  assert.ok(Number.isInteger(oldestAgeMs), `oldestAgeMs ${oldestAgeMs} is not whole milliseconds`);
});
