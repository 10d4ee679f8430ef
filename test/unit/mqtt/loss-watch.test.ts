import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import { LossWatch, lossWatchSchema } from '../../../src/mqtt/loss-watch.ts';
import { CounterRegistry } from '../../../src/observability/counters.ts';

/** A watch whose window the test sets, with its warnings collected. */
function watch() {
  const counters = new CounterRegistry();
  const lines: { level: number; msg: string }[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as { level: number; msg: string }) });
  const state = { pending: 0, oldestAt: undefined as number | undefined };
  const w = new LossWatch({
    config: lossWatchSchema().parse({ behindAfterMs: 1000 }),
    clientId: 'ferry-a',
    broker: 'mqtt://broker',
    bridge: 'b',
    maxInFlight: 100,
    logger,
    counters,
    window: () => state,
  });
  const warnings = () => lines.filter((l) => l.level === 40).map((l) => l.msg);
  return { w, counters, state, warnings };
}

test("the first counter reading and a restarted broker's lower one are baselines, not drops", () => {
  const { w, counters, warnings } = watch();
  w.connection(true, 0);
  w.counter(500, 1_000);
  w.counter(3, 2_000);
  w.counter(3, 3_000);
  assert.equal(w.status(3_000).brokerDropped, 0);
  assert.deepEqual(warnings(), []);
  assert.equal(counters.get('mqtt.client.broker_drops{bridge=b,ferry=keeping_up}'), 0);
});

test('drops while the source keeps up are counted as keeping_up, warned once per episode, and a new episode starts after 30 s of quiet', () => {
  const { w, counters, warnings } = watch();
  w.connection(true, 0);
  w.counter(0, 1_000);
  w.counter(5, 2_000);
  w.counter(9, 3_000);
  assert.equal(counters.get('mqtt.client.broker_drops{bridge=b,ferry=keeping_up}'), 9);
  assert.equal(warnings().length, 1);
  w.tick(20_000);
  w.counter(10, 21_000);
  assert.equal(warnings().length, 1, 'the same episode');
  w.tick(52_000);
  w.counter(12, 53_000);
  assert.equal(warnings().length, 2, 'a new episode');
});

test('drops counted while the source waits for the buffer, or within a counter interval of it, are put down to it', () => {
  const { w, counters, state, warnings } = watch();
  w.connection(true, 0);
  w.counter(0, 0);
  state.pending = 20;
  state.oldestAt = 1_000;
  w.tick(2_000);
  assert.equal(warnings().length, 1, 'behind for behindAfterMs: one warning');
  assert.equal(counters.get('mqtt.client.behind{bridge=b}'), 1);
  w.counter(40, 2_500);
  assert.equal(counters.get('mqtt.client.broker_drops{bridge=b,ferry=behind}'), 40);
  assert.equal(w.status(2_500).behindForMs, 500);
  // Caught up: the next reading still falls within the interval where the source was behind.
  state.pending = 0;
  state.oldestAt = undefined;
  w.tick(3_000);
  w.counter(50, 4_000);
  assert.equal(counters.get('mqtt.client.broker_drops{bridge=b,ferry=behind}'), 50);
  w.tick(5_000);
  assert.equal(w.status(5_000).behindForMs, undefined, 'caught up after behindAfterMs without lag');
  assert.equal(counters.get('mqtt.client.behind{bridge=b}'), 1);
});

test("only the broker's notice naming this client counts as dropping for it", () => {
  const { w, counters, warnings } = watch();
  w.logLine('1796355865: Outgoing messages are being dropped for client ferry-b.');
  w.logLine('1796355865: Outgoing messages are being dropped for client ferry-a.');
  assert.equal(counters.get('mqtt.client.broker_dropping{bridge=b}'), 1);
  assert.equal(warnings().length, 1);
  assert.equal(w.status().droppingForThisClient, 1);
});
