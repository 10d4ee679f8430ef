import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { connectAsync } from 'mqtt';
import pino from 'pino';
import { openBuffer } from '../../src/buffer/open.ts';
import { type HandlerBridgeConfig, handlerBridgeSchema } from '../../src/config/bridge-module.ts';
import { type GatewayConfig, loadConfig } from '../../src/config/load.ts';
import { garbageCollector } from '../../src/handler/gc-nudge.ts';
import type { BridgeDefinition } from '../../src/index.ts';
import { Gateway } from '../../src/runtime/gateway.ts';
import { componentKinds } from '../../src/runtime/registry.ts';
import { HistoryReader } from '../../src/sqlite/history-store.ts';

// A gateway in the test's process running TypeScript bridges defined in the test (the handler
// tests): bridge `h` from devices/+/telemetry/# to the history sink `out`, unless told otherwise.

/** gateway.yaml in `root` (free ports, no admin server), loaded. */
export function handlerGatewayConfig(root: string, drainTimeoutMs = 3000): GatewayConfig {
  writeFileSync(
    join(root, 'gateway.yaml'),
    `mqtt: {host: 127.0.0.1, port: 0, allowAnonymous: loopback}\nadmin: {enabled: false}\nshutdown: {drainTimeoutMs: ${drainTimeoutMs}}\ndevices: []\nbridges: []\ngateway: {dataDir: data}\n`,
  );
  return loadConfig(join(root, 'gateway.yaml'), { kinds: componentKinds, env: {} });
}

/** Bridge `h` with `handle`, checked and given defaults as the loader does with a bridges/*.ts definition; `settings` override the rest. */
export function handlerBridge(handle: BridgeDefinition['handle'], settings: Record<string, unknown> = {}): HandlerBridgeConfig {
  const definition = handlerBridgeSchema(componentKinds).parse({
    name: 'h',
    from: { mqtt: { topics: ['devices/+/telemetry/#'] } },
    to: { out: { history: {} } },
    buffer: { retryInitialMs: 50, retryMaxMs: 200 },
    ...settings,
    handle,
  });
  return { ...definition, file: 'h.ts' } as HandlerBridgeConfig;
}

/**
 * Starts a gateway in `root` running `bridges`; a reload loads `reloaded` (the same gateway
 * settings, those bridges) when given.
 */
export async function handlerGateway(
  root: string,
  bridges: readonly HandlerBridgeConfig[],
  options: { readonly reloaded?: readonly HandlerBridgeConfig[]; readonly drainTimeoutMs?: number } = {},
): Promise<Gateway> {
  const config = handlerGatewayConfig(root, options.drainTimeoutMs);
  const { reloaded } = options;
  const gateway = new Gateway(
    { ...config, bridgeConfigs: [...bridges] },
    pino({ level: process.env['LOG'] ?? 'silent' }),
    'test',
    reloaded === undefined ? {} : { load: async () => ({ ...config, bridgeConfigs: [...reloaded] }) },
  );
  await gateway.start();
  return gateway;
}

/** Publishes `payloads` at QoS 1 as `device`, each acknowledged (stored) before the next. */
export async function publishReadings(gateway: Gateway, payloads: readonly string[], device = 'dev-1'): Promise<void> {
  const client = await connectAsync(`mqtt://127.0.0.1:${gateway.mqttPort}`, { clientId: device, reconnectPeriod: 0 });
  try {
    for (const payload of payloads) await client.publishAsync(`devices/${device}/telemetry/t`, payload, { qos: 1 });
  } finally {
    await client.endAsync();
  }
}

/** `{"i":0}`, `{"i":1}`, ... */
export const readings = (n: number): string[] => Array.from({ length: n }, (_, i) => JSON.stringify({ i }));

/** Messages of bridge `h` not yet past its handler's cursor. */
export function handlerPending(gateway: Gateway): number {
  const stats = gateway.status().buffer.bridges.find((b) => b.bridge === 'h');
  return stats?.sinks.find((s) => s.sink === 'handler')?.pending ?? -1;
}

/** The messages of bridge `h` in the buffer of a stopped gateway in `root`. */
export function bufferedAfterStop(root: string): number {
  const { store } = openBuffer(join(root, 'data'), pino({ level: 'silent' }));
  try {
    return store.stats('h').messages;
  } finally {
    store.close();
  }
}

export async function waitFor(what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Collects garbage and lets finalizers and the acks they cause run. */
export async function settleGarbage(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    garbageCollector()();
    await sleep(30);
  }
}

/** What the history holds, newest first. */
export function historyRows(root: string): { id: string; topic: string; payload: string }[] {
  const reader = new HistoryReader(join(root, 'data'));
  try {
    return reader.latest({ limit: 10_000 }).map((row) => ({ id: row.id, topic: row.topic, payload: Buffer.from(row.payload).toString() }));
  } finally {
    reader.close();
  }
}
