// What a TypeScript bridge's handler held when its pipeline failed, while it waits for the next
// run (a backoff, the held messages handed again one at a time), through a stop and a reload:
// none of it is acked before a run handled it, whatever happens to the failed run's objects.
// And onHoldTimeout applies to what the handler holds, not to messages whose outputs wait on a
// sink. A gateway in the test's process, its buffer and history on disk.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { NEVER, Subject, buffer, filter, map, merge, mergeMap, take, tap } from 'rxjs';
import type { BridgeDefinition } from '../../src/index.ts';
import { Gateway } from '../../src/runtime/gateway.ts';
import { blackHole } from '../harness/black-hole.ts';
import {
  bufferedAfterStop,
  handlerBridge,
  handlerGateway,
  handlerGatewayConfig,
  handlerPending,
  historyRows,
  publishReadings,
  readings,
  settleGarbage,
  waitFor,
} from '../harness/handler-gateway.ts';
import { capturedEntries } from '../harness/log-lines.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-handler-restarts-');

/**
 * A handler holding every message in a window until `flush` (then one aggregate to `out`), that
 * fails with an error naming no message (a timer, an async step) on `fail`; `seen` counts the
 * messages handed to it over all its runs.
 */
function windowThatFails() {
  const flush = new Subject<void>();
  const fail = new Subject<void>();
  const counts = { seen: 0, runs: 0 };
  const handle: BridgeDefinition['handle'] = (messages, tools) => {
    counts.runs += 1;
    return merge(
      messages.pipe(
        tap(() => (counts.seen += 1)),
        buffer(flush),
        filter((window) => window.length > 0),
        map((window) => tools.to('out', window, { json: { count: window.length } })),
      ),
      fail.pipe(
        map(() => {
          throw new Error('an asynchronous step failed');
        }),
      ),
    );
  };
  return { flush, fail, counts, handle };
}

/** Fails the handler twice without progress: the second failure waits out a backoff of `retryInitialMs`. */
async function failIntoBackoff(handler: ReturnType<typeof windowThatFails>, held: number): Promise<void> {
  handler.fail.next();
  await waitFor('the held messages handed again', () => handler.counts.seen === 2 * held && handler.counts.runs === 2);
  handler.fail.next();
}

test("a handler waiting out a restart backoff: its failed run's messages are not acked when collected; the next run gets them", async () => {
  const root = tempDir();
  const handler = windowThatFails();
  const gateway = await handlerGateway(root, [handlerBridge(handler.handle, { buffer: { retryInitialMs: 2000, retryMaxMs: 2000 } })]);
  try {
    await publishReadings(gateway, readings(10));
    await waitFor('10 messages handed', () => handler.counts.seen === 10);
    await failIntoBackoff(handler, 10);
    await sleep(50);
    assert.equal(gateway.status().bridges[0]?.state, 'failing');
    // The failed run's window is unreachable now: collected, it must not ack its messages.
    await settleGarbage();
    await sleep(100);
    assert.equal(handlerPending(gateway), 10, 'no message acked during the backoff');
    await waitFor('the third run', () => handler.counts.runs === 3, 10_000);
    await waitFor('the held messages handed to it', () => handler.counts.seen === 30);
    handler.flush.next();
    await waitFor('the aggregate written', () => handlerPending(gateway) === 0);
    assert.deepEqual(
      historyRows(root).map((r) => r.payload),
      ['{"count":10}'],
    );
  } finally {
    await gateway.stop();
  }
});

test('stopped while a restarted handler is handed its held messages one at a time, those not handed yet stay buffered', async () => {
  const root = tempDir();
  const fail = new Subject<void>();
  const total = 300;
  let seen = 0;
  const bridge = handlerBridge((messages, tools) =>
    merge(
      messages.pipe(
        tap(() => {
          seen += 1;
          // A handler that takes 2 ms a message: the messages are handed again over ~600 ms.
          const until = Date.now() + 2;
          while (Date.now() < until);
        }),
        buffer(NEVER),
        map((window) => tools.to('out', window, { json: { count: window.length } })),
      ),
      fail.pipe(
        map(() => {
          throw new Error('an asynchronous step failed');
        }),
      ),
    ),
  );
  const gateway = await handlerGateway(root, [bridge]);
  await publishReadings(gateway, readings(total));
  await waitFor('every message handed', () => seen === total);
  fail.next();
  await sleep(100);
  // The window emits what this run was handed; the others were never handled by it.
  await gateway.stop();
  const written = historyRows(root).reduce((n, row) => n + (JSON.parse(row.payload) as { count: number }).count, 0);
  const left = bufferedAfterStop(root);
  assert.ok(left > 0 && written > 0, `stopped while handing them again: ${written} written, ${left} left`);
  assert.equal(written + left, total, 'every message written, or still buffered');
});

test('a reload while the old version waits out a restart backoff: the old version acks nothing on the cursor the new one reads', async () => {
  const root = tempDir();
  const handler = windowThatFails();
  // A module-level cache of a message (as bridges/deltas.ts keeps each device's last reading)
  // keeps the old version reachable after the reload.
  const cache: unknown[] = [];
  const old = handlerBridge(
    (messages, tools) => {
      const out = handler.handle(messages, tools);
      return merge(
        out,
        messages.pipe(
          tap((m) => {
            if (cache.length === 0) cache.push(m);
          }),
          mergeMap(() => NEVER),
        ),
      );
    },
    { buffer: { retryInitialMs: 5000, retryMaxMs: 5000 } },
  );
  let seenByNew = 0;
  const replacement = handlerBridge((messages, tools) =>
    messages.pipe(
      tap(() => (seenByNew += 1)),
      buffer(NEVER),
      map((window) => tools.to('out', window, { json: { count: window.length } })),
    ),
  );
  const gateway = await handlerGateway(root, [old], { reloaded: [replacement] });
  try {
    await publishReadings(gateway, readings(10));
    await waitFor('10 messages handed', () => handler.counts.seen === 10);
    await failIntoBackoff(handler, 10);
    await sleep(20);
    assert.equal((await gateway.reload()).ok, true);
    await waitFor('the new version holds the 10', () => seenByNew === 10);
    await settleGarbage();
    await sleep(100);
    assert.equal(handlerPending(gateway), 10, 'the new version confirmed nothing: all 10 are still buffered');
  } finally {
    await gateway.stop();
  }
  assert.equal(cache.length > 0, true);
});

test('onHoldTimeout: ack settles the messages the handler holds, not those whose outputs wait on a sink that does not answer', async () => {
  const root = tempDir();
  const hole = await blackHole();
  // Readings 0-2 go to a Kafka that never answers; 3-4 are held by the handler for ever.
  const bridge = handlerBridge(
    (messages, tools) => messages.pipe(mergeMap((m) => (m.json<{ i: number }>().i < 3 ? [tools.to('out', m)] : NEVER.pipe(map(() => tools.to('out', m)))))),
    { to: { out: { kafka: { brokers: hole.address, topic: 't' } } }, maxHoldMs: 300, onHoldTimeout: 'ack' },
  );
  const gateway = await handlerGateway(root, [bridge], { drainTimeoutMs: 500 });
  try {
    await publishReadings(gateway, readings(5));
    await waitFor('the held messages acked by the policy', () => handlerPending(gateway) === 3);
    await sleep(1000);
    assert.equal(gateway.counters.get('handler.held_too_long{action=ack,bridge=h}'), 2);
    assert.equal(handlerPending(gateway), 3, 'the messages waiting on Kafka are not acked');
  } finally {
    await gateway.stop();
    hole.close();
  }
  assert.equal(bufferedAfterStop(root), 3, 'nothing reached Kafka: its messages are still buffered');
});

test("a handler whose observable completes is restarted, logged as the bridge code's fault (CONFIG_INVALID); the messages it handled are not dead-lettered for it", {
  timeout: 60_000,
}, async () => {
  const root = tempDir();
  const { logger, entries } = capturedEntries('warn');
  // take(2): each run handles two messages, then completes, which a handler must not do.
  const bridge = handlerBridge((messages, tools) =>
    messages.pipe(
      take(2),
      map((m) => tools.to('out', m)),
    ),
  );
  const gateway = new Gateway({ ...handlerGatewayConfig(root), bridgeConfigs: [bridge] }, logger, 'test');
  await gateway.start();
  try {
    await publishReadings(gateway, readings(5));
    await waitFor('every message written', () => historyRows(root).length === 5 && handlerPending(gateway) === 0);
    assert.equal(gateway.counters.get('handler.rejected{bridge=h}') ?? 0, 0, 'none dead-lettered');
    assert.equal(gateway.status().buffer.bridges.find((b) => b.bridge === 'h')?.deadLetters, 0);
    assert.ok((gateway.counters.get('handler.restarts{bridge=h}') ?? 0) >= 2, 'restarted after each completion');
    assert.deepEqual(
      historyRows(root).map((r) => r.payload),
      readings(5),
    );
    const completed = entries.filter((l) => String(l['msg']).startsWith('the handler failed: restarting it'));
    assert.ok(completed.length >= 2, `${completed.length} completions logged`);
    for (const line of completed) {
      const err = line['err'] as { code?: string; message?: string };
      assert.equal(err.code, 'CONFIG_INVALID');
      assert.match(String(err.message), /the handler's observable completed while the bridge runs/);
    }
  } finally {
    await gateway.stop();
  }
});

test("a handler that fails while the gateway stops: its messages are nacked with the handler's error, not Ferry's INTERNAL one, and stay buffered", async () => {
  const root = tempDir();
  const { logger, entries } = capturedEntries('warn');
  let seen = 0;
  // The window emits what it holds when the input completes at the stop, and building its output throws.
  const bridge = handlerBridge((messages) =>
    messages.pipe(
      tap(() => (seen += 1)),
      buffer(NEVER),
      map((): never => {
        throw new Error('the aggregate could not be built');
      }),
    ),
  );
  const gateway = new Gateway({ ...handlerGatewayConfig(root), bridgeConfigs: [bridge] }, logger, 'test');
  await gateway.start();
  await publishReadings(gateway, readings(5));
  await waitFor('5 messages handed', () => seen === 5);
  await gateway.stop();
  assert.equal(entries.filter((l) => String(l['msg']).startsWith('the handler failed while stopping')).length, 1);
  const nacked = entries.filter((l) => l['msg'] === 'not handled; will deliver again').map((l) => l['err'] as { code?: string; message?: string });
  assert.equal(nacked.length, 1, JSON.stringify(nacked));
  // A thrown error of the bridge's code is the handler's, classed as one it throws on a message (MESSAGE_REJECTED).
  assert.equal(nacked[0]?.code, 'MESSAGE_REJECTED');
  assert.match(String(nacked[0]?.message), /the handler of bridge 'h' failed while stopping: the aggregate could not be built/);
  assert.equal(bufferedAfterStop(root), 5, 'none dead-lettered or acked: all 5 stay buffered for the next start');
});
