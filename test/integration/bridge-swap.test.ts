import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { connectAsync } from 'mqtt';
import pino from 'pino';
import { bufferSettingsSchema } from '../../src/buffer/config.ts';
import { openBuffer } from '../../src/buffer/open.ts';
import { BufferWriter } from '../../src/buffer/writer.ts';
import { type BridgeConfig, bridgeSchema } from '../../src/config/schema.ts';
import { EmbeddedBroker } from '../../src/mqtt/embedded-broker.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { retire, swapBridges } from '../../src/runtime/bridge-swap.ts';
import type { GatewayBridge } from '../../src/runtime/bridge.ts';
import { createBridge } from '../../src/runtime/create-bridge.ts';
import type { AnyBridgeConfig } from '../../src/config/bridge-module.ts';
import { componentKinds } from '../../src/runtime/registry.ts';
import { tempDirs } from '../harness/temp.ts';
import { eventually } from '../harness/eventually.ts';

// A reload builds the new version of a changed bridge while the old one runs. The new version
// must not take the old one's cursors away before it takes over: if the reload is refused
// (another bridge cannot be built), the old version runs on, and a cursor removed under one
// of its sinks would let the buffer delete messages that sink has not delivered.
const logger = pino({ level: 'silent' });
const tempDir = tempDirs('ferry-bridge-swap-');
const schema = bridgeSchema(componentKinds);

function bridge(name: string, to: unknown[]): BridgeConfig {
  return { ...schema.parse({ name, from: { mqtt: { topics: ['swap/#'] } }, to }), file: `${name}.yaml` } as BridgeConfig;
}

async function setup() {
  const dir = tempDir();
  const counters = new CounterRegistry();
  const { store } = openBuffer(dir, logger);
  const writer = new BufferWriter(store, bufferSettingsSchema().parse({}), logger, counters);
  const broker = await EmbeddedBroker.start({ host: '127.0.0.1', port: 0, logger, counters });
  const deps = { broker, store, writer, logger, counters, dataDir: dir };
  const built: GatewayBridge[] = [];
  const create = (config: AnyBridgeConfig, startAfter?: Promise<void>, commitAfter?: Promise<void>) => {
    const created = createBridge(config, { ...deps, ...(startAfter === undefined ? {} : { startAfter }), ...(commitAfter === undefined ? {} : { commitAfter }) });
    built.push(created);
    return created;
  };
  const close = async () => {
    for (const b of built) b.abort();
    await broker.close();
    store.close();
  };
  return { store, writer, broker, create, close };
}

const twoSinks = [{ history: {} }, { history: { keep: 1000 } }];

test('a refused reload leaves the running bridge its cursors and policy; bridges built for it take theirs back', async () => {
  const { store, writer, broker, create, close } = await setup();
  try {
    const old = create(bridge('b', twoSinks));
    const cursorsBefore = store.cursors('b');
    assert.deepEqual(
      cursorsBefore.map((c) => c.sink),
      ['history#0', 'history#1'],
    );
    const policyBefore = writer.policy('b');

    // 'a' is new and fine; the new 'b' drops a sink and names a kind no registry has (as a
    // sink whose construction throws would), so the reload is refused after 'a' was built.
    const broken = { ...bridge('b', [{ history: {} }]), to: [{ history: {} }, { nosuch: {} }] };
    const result = swapBridges([old], { added: [bridge('a', [{ history: {} }])], changed: [broken], removed: [], unchanged: [] }, create);
    assert.ok('cause' in result, 'the swap is refused');
    assert.match(String(result.cause), /unknown sink kind 'nosuch'/);

    assert.deepEqual(store.cursors('b'), cursorsBefore);
    assert.equal(writer.policy('b'), policyBefore);
    assert.deepEqual(store.cursors('a'), []);
    assert.equal(writer.policy('a'), undefined);

    // The old version goes on: both its sinks deliver, and their cursors move.
    const device = await connectAsync(`mqtt://127.0.0.1:${broker.port}`, { clientId: 'swap-device', reconnectPeriod: 0 });
    await device.publishAsync('swap/x', 'after the refused reload', { qos: 1 });
    await device.endAsync();
    await eventually(
      () =>
        assert.ok(
          !store.cursors('b').some((c) => c.seq === 0 || c.seq === cursorsBefore[0]?.seq),
          'still: store.cursors(b).some((c) => c.seq === 0 || c.seq === cursorsBefore[0]?.seq)',
        ),
      { timeoutMs: 5000 },
    );
    assert.ok(
      store.cursors('b').every((c, i) => c.seq > (cursorsBefore[i]?.seq ?? 0)),
      JSON.stringify(store.cursors('b')),
    );
    await old.stop();
  } finally {
    await close();
  }
});

test('a reload that drops a sink removes its cursor only once the new version took over', async () => {
  const { store, create, close } = await setup();
  try {
    const old = create(bridge('b', twoSinks));
    const result = swapBridges([old], { added: [], changed: [bridge('b', [{ history: {} }])], removed: [], unchanged: [] }, create);
    assert.ok(!('cause' in result));
    // Built, not yet taken over: the old version's cursors are all there, the new one's too.
    assert.deepEqual(
      store.cursors('b').map((c) => c.sink),
      ['history', 'history#0', 'history#1'],
    );
    await Promise.all(result.retired.map((r) => retire(r, 5000, logger)));
    await sleep(10);
    assert.deepEqual(
      store.cursors('b').map((c) => c.sink),
      ['history'],
    );
    await Promise.all(result.bridges.map((b) => b.stop()));
  } finally {
    await close();
  }
});

test("a bridge added back after a removal prunes its old sinks' cursors only when the reload goes through", async () => {
  const { store, create, close } = await setup();
  try {
    // Left by an earlier version of 'r', removed by a reload before this one: its backlog waits.
    store.registerBridge('r', ['history', 'kafka']);
    const broken = { ...bridge('b', [{ history: {} }]), to: [{ nosuch: {} }] };
    const refused = swapBridges([], { added: [bridge('r', [{ history: {} }]), broken], changed: [], removed: [], unchanged: [] }, create);
    assert.ok('cause' in refused);
    await sleep(10);
    assert.deepEqual(
      store.cursors('r').map((c) => c.sink),
      ['history', 'kafka'],
      'a refused reload left them alone',
    );

    const applied = swapBridges([], { added: [bridge('r', [{ history: {} }])], changed: [], removed: [], unchanged: [] }, create);
    assert.ok(!('cause' in applied));
    await sleep(10);
    assert.deepEqual(
      store.cursors('r').map((c) => c.sink),
      ['history'],
    );
    await Promise.all(applied.bridges.map((b) => b.stop()));
  } finally {
    await close();
  }
});
