import assert from 'node:assert/strict';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { NEVER, Subject, buffer, filter, map, merge, mergeMap, tap } from 'rxjs';
import type { BridgeDefinition, Message } from '../../src/index.ts';
import pino from 'pino';
import { Gateway } from '../../src/runtime/gateway.ts';
import { historyPath } from '../../src/sqlite/history-store.ts';
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

const tempDir = tempDirs('ferry-handler-');

/** A gateway in this process, on free ports, running one TypeScript bridge `h` with `handle`. */
const gatewayWith = (root: string, handle: BridgeDefinition['handle']): Promise<Gateway> => handlerGateway(root, [handlerBridge(handle)]);
const publish = publishReadings;
const pending = handlerPending;
const history = historyRows;

test('messages dropped by filter are acked as handled: the cursor moves and the buffer drains', async () => {
  const root = tempDir();
  let seen = 0;
  const gateway = await gatewayWith(root, (messages, tools) =>
    messages.pipe(
      tap(() => (seen += 1)),
      filter(() => false),
      map((m) => tools.to('out', m)),
    ),
  );
  try {
    await publish(gateway, readings(20));
    await waitFor('the handler to see 20 messages', () => seen === 20);
    // Nothing but the garbage collector (run by Ferry itself when idle) tells Ferry they were dropped.
    await waitFor('the buffer to drain', () => pending(gateway) === 0 && gateway.status().buffer.bridges.find((b) => b.bridge === 'h')?.messages === 0);
    assert.equal(gateway.status().bridges[0]?.handler?.unacked, 0);
    assert.equal(gateway.counters.get('buffer.delivered{bridge=h,sink=handler}'), 20);
  } finally {
    await gateway.stop();
  }
});

test('messages held in a window are not acked until the aggregate built from them is confirmed, then they are', async () => {
  const root = tempDir();
  const close = new Subject<void>();
  let seen = 0;
  const gateway = await gatewayWith(root, (messages, tools) =>
    messages.pipe(
      tap(() => (seen += 1)),
      buffer(close),
      filter((window) => window.length > 0),
      map((window) => tools.to('out', window, { json: { count: window.length, sum: window.reduce((n, m) => n + m.json<{ i: number }>().i, 0) } })),
    ),
  );
  try {
    await publish(gateway, readings(10));
    await waitFor('the handler to see 10 messages', () => seen === 10);
    await settleGarbage();
    assert.equal(pending(gateway), 10, 'held in the window: not acked');
    assert.equal(gateway.status().bridges[0]?.handler?.unacked, 10);

    // The history sink cannot open its database (a directory stands in its place): the aggregate is emitted but not confirmed.
    const db = historyPath(join(root, 'data'));
    mkdirSync(db);
    close.next();
    await waitFor('the write to fail', () => gateway.counters.get('sink.messages.failed{bridge=h,sink=out}') >= 1);
    await settleGarbage();
    assert.equal(pending(gateway), 10, 'aggregate not confirmed: still not acked');
    await waitFor('the inputs to be handed again', () => seen >= 20);
    assert.ok(gateway.counters.get('buffer.retries{bridge=h,sink=handler}') >= 10);

    // The sink works again; the next window holds the redelivered inputs.
    rmSync(db, { recursive: true });
    close.next();
    await waitFor('the window to be confirmed and its inputs acked', () => pending(gateway) === 0);
    const rows = history(root);
    assert.deepEqual(JSON.parse(rows.at(-1)?.payload ?? '{}'), { count: 10, sum: 45 });
  } finally {
    await gateway.stop();
  }
});

test('a failing sink sends the inputs of its outputs back to the buffer, which delivers them again until written', async () => {
  const root = tempDir();
  const db = historyPath(join(root, 'data'));
  const gateway = await gatewayWith(root, (messages, tools) => messages.pipe(map((m) => tools.to('out', m))));
  try {
    mkdirSync(db);
    await publish(gateway, readings(5));
    await waitFor('retries', () => gateway.counters.get('buffer.retries{bridge=h,sink=handler}') >= 10);
    assert.equal(pending(gateway), 5);
    rmSync(db, { recursive: true });
    await waitFor('the buffer to drain', () => pending(gateway) === 0);
    const payloads = history(root).map((r) => r.payload);
    assert.deepEqual([...new Set(payloads)].sort(), readings(5).sort());
  } finally {
    await gateway.stop();
  }
});

test('a handler error is pinned on the message being handled: it is dead-lettered with the error, the pipeline restarts at once, nothing is sent twice (issue 18)', async () => {
  const root = tempDir();
  let calls = 0;
  const gateway = await gatewayWith(root, (messages, tools) => {
    calls += 1;
    return messages.pipe(
      map((m) => {
        if (m.json<{ i: number }>().i === 3) throw new Error('boom');
        return tools.to('out', m);
      }),
    );
  });
  try {
    await publish(gateway, readings(6));
    await waitFor('the buffer to drain', () => pending(gateway) === 0);
    assert.equal(calls, 2);
    assert.equal(gateway.counters.get('handler.errors{bridge=h}'), 1);
    assert.equal(gateway.counters.get('handler.rejected{bridge=h}'), 1);
    const status = gateway.status().bridges[0];
    assert.equal(status?.handler?.restarts, 1);
    assert.equal(status?.state, 'running');
    assert.match(status?.handler?.lastError ?? '', /boom/);
    const rows = history(root);
    assert.deepEqual(
      rows.map((r) => r.payload).sort(),
      readings(6)
        .filter((r) => !r.includes('"i":3'))
        .sort(),
    );
    const stats = gateway.status().buffer.bridges.find((b) => b.bridge === 'h');
    assert.equal(stats?.deadLetters, 1);
  } finally {
    await gateway.stop();
  }
});

test('a payload that breaks json() is dead-lettered, the pipeline restarts and the other messages go through', async () => {
  const root = tempDir();
  const gateway = await gatewayWith(root, (messages, tools) => messages.pipe(map((m) => tools.to('out', m, { json: { doubled: m.json<{ i: number }>().i * 2 } }))));
  try {
    await publish(gateway, ['{"i":1}', 'not json', '{"i":2}']);
    await waitFor('the buffer to drain', () => pending(gateway) === 0);
    assert.equal(gateway.counters.get('handler.rejected{bridge=h}'), 1);
    const stats = gateway.status().buffer.bridges.find((b) => b.bridge === 'h');
    assert.equal(stats?.deadLetters, 1);
    assert.deepEqual([...new Set(history(root).map((r) => r.payload))].sort(), ['{"doubled":2}', '{"doubled":4}']);
  } finally {
    await gateway.stop();
  }
});

test("an output the handler builds wrongly is the handler's error: dead-lettered, counted, and logged as the bridge code's fault (CONFIG_INVALID)", async () => {
  const root = tempDir();
  const logged: Record<string, unknown>[] = [];
  const logger = pino({ level: 'warn' }, { write: (line: string) => logged.push(JSON.parse(line) as Record<string, unknown>) });
  const bridge = handlerBridge((messages, tools) => messages.pipe(map((m) => tools.to('out', m, m.json<{ i: number }>().i === 1 ? { payload: m.payload, json: m.json() } : {}))));
  const gateway = new Gateway({ ...handlerGatewayConfig(root), bridgeConfigs: [bridge] }, logger, 'test');
  await gateway.start();
  try {
    await publish(gateway, readings(3));
    await waitFor('the buffer to drain', () => pending(gateway) === 0);
    assert.equal(gateway.counters.get('handler.errors{bridge=h}'), 1);
    assert.equal(gateway.counters.get('handler.rejected{bridge=h}'), 1);
    assert.equal(gateway.status().buffer.bridges.find((b) => b.bridge === 'h')?.deadLetters, 1);
    const failed = logged.filter((l) => String(l['msg']).startsWith('the handler failed on a message'));
    assert.equal(failed.length, 1);
    const err = failed[0]?.['err'] as { code?: string; message?: string };
    assert.match(String(err.message), /an output to 'out' has both payload and json/);
    assert.equal(err.code, 'CONFIG_INVALID');
    assert.deepEqual([...new Set(history(root).map((r) => r.payload))].sort(), ['{"i":0}', '{"i":2}']);
  } finally {
    await gateway.stop();
  }
});

test("a value emitted that is no output is the handler's error, logged as the bridge code's fault (CONFIG_INVALID): the message is dead-lettered, the rest written", async () => {
  const root = tempDir();
  const { logger, entries } = capturedEntries('warn');
  // A bridge in JavaScript, or one past a cast, can emit an object that only looks like an output.
  const bridge = handlerBridge(((messages, tools) =>
    messages.pipe(map((m) => (m.json<{ i: number }>().i === 1 ? { sink: 'out', json: m.json() } : tools.to('out', m))))) as BridgeDefinition['handle']);
  const gateway = new Gateway({ ...handlerGatewayConfig(root), bridgeConfigs: [bridge] }, logger, 'test');
  await gateway.start();
  try {
    await publish(gateway, readings(3));
    await waitFor('the buffer to drain', () => pending(gateway) === 0);
    assert.equal(gateway.counters.get('handler.errors{bridge=h}'), 1);
    assert.equal(gateway.counters.get('handler.rejected{bridge=h}'), 1);
    assert.equal(gateway.status().buffer.bridges.find((b) => b.bridge === 'h')?.deadLetters, 1);
    const failed = entries.filter((l) => String(l['msg']).startsWith('the handler failed on a message'));
    const err = failed.map((l) => l['err'] as { code?: string; message?: string });
    assert.deepEqual(
      err.map((e) => e.code),
      ['CONFIG_INVALID'],
    );
    assert.match(String(err[0]?.message), /the handler emitted an object \(sink, json\); emit outputs built with tools\.to/);
    assert.deepEqual([...new Set(history(root).map((r) => r.payload))].sort(), ['{"i":0}', '{"i":2}']);
  } finally {
    await gateway.stop();
  }
});

test("a handle() that returns no Observable is the bridge code's fault (CONFIG_INVALID): logged, and the handler is restarted; no message is dead-lettered for it", async () => {
  const root = tempDir();
  const { logger, entries } = capturedEntries('warn');
  let calls = 0;
  // The first call returns an array, not an Observable (past the types, as JavaScript can); the next ones a pipeline.
  const bridge = handlerBridge(((messages, tools) => {
    calls += 1;
    return calls === 1 ? [] : messages.pipe(map((m) => tools.to('out', m)));
  }) as BridgeDefinition['handle']);
  const gateway = new Gateway({ ...handlerGatewayConfig(root), bridgeConfigs: [bridge] }, logger, 'test');
  await gateway.start();
  try {
    await publish(gateway, readings(3));
    await waitFor('the buffer to drain', () => pending(gateway) === 0);
    assert.equal(calls, 2);
    assert.equal(gateway.counters.get('handler.errors{bridge=h}'), 1);
    assert.equal(gateway.counters.get('handler.rejected{bridge=h}') ?? 0, 0);
    assert.equal(gateway.status().buffer.bridges.find((b) => b.bridge === 'h')?.deadLetters, 0);
    const failed = entries.filter((l) => String(l['msg']).startsWith('the handler failed'));
    const err = failed.map((l) => l['err'] as { code?: string; message?: string });
    assert.deepEqual(
      err.map((e) => e.code),
      ['CONFIG_INVALID'],
    );
    assert.match(String(err[0]?.message), /handle\(\) returned an object \(no keys\), not an Observable of outputs/);
    assert.deepEqual(
      history(root)
        .map((r) => r.payload)
        .sort(),
      readings(3),
    );
  } finally {
    await gateway.stop();
  }
});

test('message.reject dead-letters a message at once', async () => {
  const root = tempDir();
  const gateway = await gatewayWith(root, (messages, tools) =>
    messages.pipe(
      mergeMap((m) => {
        if (m.json<{ i: number }>().i < 0) {
          m.reject('negative reading');
          return [];
        }
        return [tools.to('out', m)];
      }),
    ),
  );
  try {
    await publish(gateway, ['{"i":1}', '{"i":-1}', '{"i":2}']);
    await waitFor('the buffer to drain', () => pending(gateway) === 0);
    assert.equal(gateway.status().buffer.bridges.find((b) => b.bridge === 'h')?.deadLetters, 1);
    assert.equal(gateway.counters.get('handler.errors{bridge=h}'), 0);
    assert.deepEqual(
      history(root).map((r) => r.payload),
      ['{"i":1}', '{"i":2}'],
    );
  } finally {
    await gateway.stop();
  }
});

test('a graceful stop lets windows emit what they hold; the aggregate is written and the buffer left empty', async () => {
  const root = tempDir();
  let seen = 0;
  const gateway = await gatewayWith(root, (messages, tools) =>
    messages.pipe(
      tap(() => (seen += 1)),
      buffer(NEVER),
      map((window) => tools.to('out', window, { json: { count: window.length } })),
    ),
  );
  await publish(gateway, readings(7));
  await waitFor('the handler to see 7 messages', () => seen === 7);
  await gateway.stop();
  assert.deepEqual(
    history(root).map((r) => r.payload),
    ['{"count":7}'],
  );
  const reopened = await gatewayWith(root, (messages, tools) => messages.pipe(map((m) => tools.to('out', m))));
  try {
    assert.equal(pending(reopened), 0);
  } finally {
    await reopened.stop();
  }
});

test('stopped without its acks (the pipeline never ends), the gateway delivers the held messages again at the next start', async () => {
  const root = tempDir();
  // Held here, so never released; and the pipeline goes on after its input completes.
  const held: Message[] = [];
  const first = await gatewayWith(root, (messages, tools) =>
    merge(NEVER, messages).pipe(
      tap((m) => held.push(m)),
      filter(() => false),
      map((m) => tools.to('out', m)),
    ),
  );
  await publish(first, readings(4));
  await waitFor('the handler to see 4 messages', () => held.length === 4);
  // The pipeline never completes, so the drain times out and the bridge is torn down unacked.
  await first.stop();
  assert.equal(existsSync(historyPath(join(root, 'data'))), false, 'nothing written');

  const second = await gatewayWith(root, (messages, tools) => messages.pipe(map((m) => tools.to('out', m))));
  try {
    await waitFor('the held messages to be delivered', () => pending(second) === 0);
    assert.deepEqual(
      history(root).map((r) => r.payload),
      readings(4),
    );
  } finally {
    await second.stop();
  }
});

test('a handler bridge removed by a reload and torn down while holding messages acks none of them later, even once they are collected', async () => {
  const root = tempDir();
  let seen = 0;
  let kept: Message | undefined;
  // Holds every message for ever (as a stuck lookup would), and keeps the last one reachable.
  const bridge = handlerBridge((messages, tools) =>
    messages.pipe(
      tap((m) => {
        seen += 1;
        kept = m;
      }),
      mergeMap((m) => NEVER.pipe(map(() => tools.to('out', m)))),
    ),
  );
  const gateway = await handlerGateway(root, [bridge], { reloaded: [], drainTimeoutMs: 300 });
  try {
    await publish(
      gateway,
      Array.from({ length: 10 }, (_, i) => String(i)),
    );
    await waitFor('the handler to get every message', () => seen === 10);
    const result = await gateway.reload();
    assert.equal(result.ok, true);
    // The stop timed out (the pipeline never ends) and the bridge was torn down, which let go
    // of what it held; one message still reachable keeps the old bridge alive. Nothing of it
    // may move the cursor now.
    await settleGarbage();
    await sleep(200);
    await settleGarbage();
  } finally {
    await gateway.stop();
  }
  assert.equal(bufferedAfterStop(root), 10, 'every acknowledged message is still buffered for the next reader');
  assert.ok(kept !== undefined);
});
