import assert from 'node:assert/strict';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { connectAsync } from 'mqtt';
import pino from 'pino';
import { NEVER, Subject, buffer, filter, map, merge, mergeMap, tap } from 'rxjs';
import { type HandlerBridgeConfig, handlerBridgeSchema } from '../../src/config/bridge-module.ts';
import { loadConfig } from '../../src/config/load.ts';
import { openBuffer } from '../../src/buffer/open.ts';
import { garbageCollector } from '../../src/handler/gc-nudge.ts';
import type { BridgeDefinition, Message } from '../../src/index.ts';
import { Gateway } from '../../src/runtime/gateway.ts';
import { componentKinds } from '../../src/runtime/registry.ts';
import { HistoryReader, historyPath } from '../../src/sqlite/history-store.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-handler-');

/** A gateway in this process, on free ports, running one TypeScript bridge defined here. */
async function gatewayWith(root: string, handle: BridgeDefinition['handle']): Promise<Gateway> {
  writeFileSync(
    join(root, 'gateway.yaml'),
    'mqtt: {host: 127.0.0.1, port: 0, allowAnonymous: loopback}\nadmin: {enabled: false}\nshutdown: {drainTimeoutMs: 3000}\ndevices: []\nbridges: []\ngateway: {dataDir: data}\n',
  );
  const config = loadConfig(join(root, 'gateway.yaml'), { kinds: componentKinds, env: {} });
  // Checked and given defaults as the loader does with a bridges/*.ts definition.
  const definition = handlerBridgeSchema(componentKinds).parse({
    name: 'h',
    from: { mqtt: { topics: ['devices/+/telemetry/#'] } },
    to: { out: { history: {} } },
    buffer: { retryInitialMs: 50, retryMaxMs: 200 },
    handle,
  });
  const bridge = { ...definition, file: 'test.ts' } as HandlerBridgeConfig;
  const gateway = new Gateway({ ...config, bridgeConfigs: [bridge] }, pino({ level: process.env['LOG'] ?? 'silent' }), 'test');
  await gateway.start();
  return gateway;
}

async function publish(gateway: Gateway, payloads: readonly string[], device = 'dev-1'): Promise<void> {
  const client = await connectAsync(`mqtt://127.0.0.1:${gateway.mqttPort}`, { clientId: device, reconnectPeriod: 0 });
  try {
    for (const payload of payloads) await client.publishAsync(`devices/${device}/telemetry/t`, payload, { qos: 1 });
  } finally {
    await client.endAsync();
  }
}

/** Messages of the handler bridge not yet past its cursor. */
function pending(gateway: Gateway): number {
  const stats = gateway.status().buffer.bridges.find((b) => b.bridge === 'h');
  return stats?.sinks.find((s) => s.sink === 'handler')?.pending ?? -1;
}

async function waitFor(what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Collects garbage and lets finalizers and the acks they cause run. */
async function settleGarbage(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    garbageCollector()();
    await sleep(30);
  }
}

function history(root: string): { id: string; topic: string; payload: string }[] {
  const reader = new HistoryReader(join(root, 'data'));
  try {
    return reader.latest({ limit: 10_000 }).map((row) => ({ id: row.id, topic: row.topic, payload: Buffer.from(row.payload).toString() }));
  } finally {
    reader.close();
  }
}

const readings = (n: number) => Array.from({ length: n }, (_, i) => JSON.stringify({ i }));

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
  writeFileSync(
    join(root, 'gateway.yaml'),
    'mqtt: {host: 127.0.0.1, port: 0, allowAnonymous: loopback}\nadmin: {enabled: false}\nshutdown: {drainTimeoutMs: 300}\ndevices: []\nbridges: []\ngateway: {dataDir: data}\n',
  );
  const config = loadConfig(join(root, 'gateway.yaml'), { kinds: componentKinds, env: {} });
  let seen = 0;
  let kept: Message | undefined;
  const definition = handlerBridgeSchema(componentKinds).parse({
    name: 'h',
    from: { mqtt: { topics: ['devices/+/telemetry/#'] } },
    to: { out: { history: {} } },
    // Holds every message for ever (as a stuck lookup would), and keeps the last one reachable.
    handle: ((messages, tools) =>
      messages.pipe(
        tap((m) => {
          seen += 1;
          kept = m;
        }),
        mergeMap((m) => NEVER.pipe(map(() => tools.to('out', m)))),
      )) satisfies BridgeDefinition['handle'],
  });
  const bridge = { ...definition, file: 'h.ts' } as HandlerBridgeConfig;
  const gateway = new Gateway({ ...config, bridgeConfigs: [bridge] }, pino({ level: 'silent' }), 'test', { load: async () => ({ ...config, bridgeConfigs: [] }) });
  await gateway.start();
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
  const { store } = openBuffer(join(root, 'data'), pino({ level: 'silent' }));
  try {
    assert.equal(store.stats('h').messages, 10, 'every acknowledged message is still buffered for the next reader');
  } finally {
    store.close();
  }
  assert.ok(kept !== undefined);
});
