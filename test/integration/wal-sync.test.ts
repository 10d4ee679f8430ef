// Issue 11 (speed without a weaker promise): under `synchronous: full` the buffer's and the
// history's connections commit without an fsync, and their writers sync the WAL on the thread
// pool before they ack (src/sqlite/wal-sync.ts). These run against a real buffer and its real WAL file; the
// fdatasync is wrapped (delayed, counted, or failing with EIO as a failing disk would, which a
// real disk here cannot be made to do) around the real one.
import assert from 'node:assert/strict';
import { fdatasync } from 'node:fs';
import { test } from 'node:test';
import pino from 'pino';
import { bufferPolicySchema, bufferSettingsSchema } from '../../src/buffer/config.ts';
import { openBuffer } from '../../src/buffer/open.ts';
import { type Fdatasync, WalSync } from '../../src/sqlite/wal-sync.ts';
import { BufferWriter } from '../../src/buffer/writer.ts';
import { createDelivery } from '../../src/core/delivery.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import { HistoryReader, HistoryWriter } from '../../src/sqlite/history-store.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { loadConfig } from '../../src/config/load.ts';
import { Gateway } from '../../src/runtime/gateway.ts';
import { componentKinds } from '../../src/runtime/registry.ts';
import { connectAsync } from 'mqtt';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { trackedDeliveries } from '../conformance/deliveries.ts';
import { eventually } from '../harness/eventually.ts';
import { tempDirs } from '../harness/temp.ts';

const logger = pino({ level: 'silent' });
const tempDir = tempDirs('ferry-wal-sync-');

/** A buffer and its writer under `synchronous: full`, syncing through `sync`. */
function setup(sync: Fdatasync) {
  const counters = new CounterRegistry();
  const { store } = openBuffer(tempDir(), logger);
  const writer = new BufferWriter(store, bufferSettingsSchema().parse({ synchronous: 'full' }), logger, counters, { fdatasync: sync });
  store.registerBridge('b', ['out']);
  writer.setPolicy('b', bufferPolicySchema().parse({}));
  const cleanup = () => {
    writer.close();
    store.close();
  };
  return { store, writer, counters, cleanup };
}

test('under synchronous: full the buffer commits without an fsync of its own: PRAGMA synchronous is NORMAL', () => {
  const { store } = openBuffer(tempDir(), logger);
  try {
    const level = (store as unknown as { db: { pragma(sql: string, options: { simple: true }): unknown } }).db.pragma('synchronous', { simple: true });
    assert.equal(level, 1);
  } finally {
    store.close();
  }
});

test('a delivery is acked only once the fdatasync of the WAL that followed its commit has returned', async () => {
  const syncs: { done: () => void }[] = [];
  // The real fdatasync, run when the test says so.
  const held: Fdatasync = (fd, done) => syncs.push({ done: () => fdatasync(fd, done) });
  const { store, writer, cleanup } = setup(held);
  try {
    const first = trackedDeliveries(3);
    for (const d of first.deliveries) writer.enqueue('b', d);
    writer.flushNow();
    // Committed: the rows are there; not synced: no ack.
    assert.equal(store.usage('b').messages, 3);
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(first.acked.length, 0);
    assert.equal(syncs.length, 1);
    // Commits made while that sync runs wait for the next one, and share it.
    const second = trackedDeliveries(2);
    for (const d of second.deliveries) writer.enqueue('b', d);
    writer.flushNow();
    const third = trackedDeliveries(2);
    for (const d of third.deliveries) writer.enqueue('b', d);
    writer.flushNow();
    assert.equal(syncs.length, 1, 'one fdatasync at a time');
    syncs[0]?.done();
    await eventually(() => assert.equal(first.acked.length, 3));
    assert.equal(second.acked.length, 0, 'committed after the first sync began: not covered by it');
    await eventually(() => assert.equal(syncs.length, 2));
    syncs[1]?.done();
    await eventually(() => assert.equal(second.acked.length + third.acked.length, 4));
    assert.equal(syncs.length, 2, 'the two later commits shared one fdatasync');
  } finally {
    for (const sync of syncs) sync.done();
    cleanup();
  }
});

test('a QoS 0 message is acked at its commit, a QoS 1 message of the same commit and the readers only after the sync', async () => {
  const syncs: { done: () => void }[] = [];
  const held: Fdatasync = (fd, done) => syncs.push({ done: () => fdatasync(fd, done) });
  const { store, writer, cleanup } = setup(held);
  try {
    const settled: string[] = [];
    const delivery = (qos: 0 | 1) => {
      const envelope = createEnvelope({ topic: `t/${qos}`, payload: `qos ${qos}`, origin: { source: 'mqtt', qos, retain: false } });
      return createDelivery(envelope, { onAck: () => settled.push(`qos ${qos}`), onNack: () => settled.push(`nacked qos ${qos}`) });
    };
    let woken = false;
    void writer.appended('b').then(() => (woken = true));
    writer.enqueue('b', delivery(1));
    writer.enqueue('b', delivery(0));
    writer.flushNow();
    // Nobody waits for a QoS 0 acknowledgement: held until the sync, a flood of them stayed in
    // memory for as long as the disk took to sync.
    assert.deepEqual(settled, ['qos 0']);
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.deepEqual(settled, ['qos 0']);
    assert.equal(woken, false, 'the readers are woken once the commit is durable');
    assert.equal(syncs.length, 1);
    syncs[0]?.done();
    await eventually(() => assert.deepEqual(settled, ['qos 0', 'qos 1']));
    await eventually(() => assert.equal(woken, true));
    assert.equal(store.usage('b').messages, 2);
  } finally {
    for (const sync of syncs) sync.done();
    cleanup();
  }
});

test('closing the writer syncs at once and acks what waited for a sync', async () => {
  const syncs: (() => void)[] = [];
  const { writer, cleanup } = setup((fd, done) => syncs.push(() => fdatasync(fd, done)));
  const waiting = trackedDeliveries(4);
  for (const d of waiting.deliveries) writer.enqueue('b', d);
  writer.flushNow();
  assert.equal(waiting.acked.length, 0);
  cleanup();
  assert.equal(waiting.acked.length, 4, 'acked by the close, before the connections that wait for them close');
  // The sync that was running returns later and acks nothing twice.
  for (const sync of syncs) sync();
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(waiting.acked.length, 4);
  assert.deepEqual(waiting.doubleSettles, []);
});

test('a failed fdatasync nacks what waited for it and stops acking: nothing synced after it can be trusted', async () => {
  let calls = 0;
  const failing: Fdatasync = (_fd, done) => {
    calls += 1;
    setImmediate(() => done(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO', errno: -5 })));
  };
  const { store, writer, counters, cleanup } = setup(failing);
  const restarts: string[] = [];
  writer.onRestartNeeded = (why) => restarts.push(why);
  try {
    const lost = trackedDeliveries(3);
    for (const d of lost.deliveries) writer.enqueue('b', d);
    writer.flushNow();
    await lost.settled();
    assert.equal(lost.acked.length, 0);
    assert.equal(lost.nacked.size, 3);
    assert.match([...lost.nacked.values()][0]?.message ?? '', /disk failed to sync/);
    assert.equal(writer.state, 'write-failed');
    assert.equal(counters.get('buffer.errors{reason=sync_failed}'), 1);
    // Later messages are held, unacknowledged (the devices keep them), and not stored.
    const later = trackedDeliveries(2);
    for (const d of later.deliveries) writer.enqueue('b', d);
    writer.flushNow();
    await new Promise((resolve) => setTimeout(resolve, 1_200));
    assert.equal(later.acked.length, 0);
    assert.equal(writer.held, 2);
    assert.equal(store.usage('b').messages, 3, 'only the commit whose sync failed is in the buffer');
    assert.equal(calls, 1, 'no fdatasync after the failed one');
    assert.deepEqual(restarts, ['the disk failed to sync the buffer (EIO: i/o error, fdatasync)'], 'the gateway is asked once to restart');
    // Final for the file, not only for this writer: a WalSync made for it again starts failed.
    assert.match(String(new WalSync(store.path).failure?.message), /EIO/);
  } finally {
    cleanup();
  }
});

test('WalSync runs its callbacks in commit order and reports a missing WAL as a failure', async () => {
  const { store } = openBuffer(tempDir(), logger);
  try {
    const sync = new WalSync(store.path);
    const order: number[] = [];
    for (let i = 0; i < 5; i++) sync.after(() => order.push(i));
    await eventually(() => assert.deepEqual(order, [0, 1, 2, 3, 4]));
    sync.close();
  } finally {
    store.close();
  }
  const missing = new WalSync(`${tempDir()}/none.db`);
  const error = await new Promise<Error | undefined>((resolve) => missing.after(resolve));
  assert.equal((error as NodeJS.ErrnoException | undefined)?.code, 'ENOENT');
  assert.equal(missing.failure, error);
});

/** `count` messages of device d1, for the history. */
const envelopes = (count: number) =>
  Array.from({ length: count }, (_, i) => createEnvelope({ topic: 'devices/d1/telemetry/t', payload: String(i), origin: { source: 'test', clientId: 'd1', qos: 1 } }));

test('the history sink under full: a batch resolves once its WAL sync returned, and a failed sync fails the batch', async () => {
  const syncs: (() => void)[] = [];
  const held = new HistoryWriter(tempDir(), 'full', { fdatasync: (fd, done) => syncs.push(() => fdatasync(fd, done)) });
  try {
    let resolved = false;
    const append = held.append('b', envelopes(3), 100).then(() => (resolved = true));
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(resolved, false, 'not confirmed before the sync');
    assert.equal(syncs.length, 1);
    syncs[0]?.();
    await append;
  } finally {
    held.close();
  }
  const dir = tempDir();
  const failing = new HistoryWriter(dir, 'full', {
    fdatasync: (_fd, done) => setImmediate(() => done(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }))),
  });
  try {
    await assert.rejects(failing.append('b', envelopes(2), 100), /EIO/);
    // Final, as for the buffer: nothing more is written, through this writer or a new one,
    // until the process restarts (the kernel may have dropped what the failed sync held).
    await assert.rejects(failing.append('b', envelopes(1), 100), /not written again until the gateway restarts/);
    assert.throws(() => new HistoryWriter(dir, 'full'), /the disk failed to sync .*history\.db \(EIO: i\/o error, fdatasync\): the history is not written again/);
  } finally {
    failing.close();
  }
  const reader = new HistoryReader(dir);
  assert.equal(reader.latest({ limit: 100 }).length, 2, 'the append after the failure wrote nothing');
  reader.close();
});

test("a gateway whose history failed a sync asks once for a restart, the bridge's messages kept in the buffer", async () => {
  const root = tempDir();
  const data = join(root, 'data');
  mkdirSync(data);
  const failing = new HistoryWriter(data, 'full', {
    fdatasync: (_fd, done) => setImmediate(() => done(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }))),
  });
  await assert.rejects(failing.append('b', envelopes(1), 100), /EIO/);
  failing.close();
  writeFileSync(join(root, 'b.yaml'), 'name: b\nfrom: { mqtt: { topics: ["t/#"] } }\nto: [{ history: {} }]\n');
  writeFileSync(
    join(root, 'gateway.yaml'),
    'mqtt: {host: 127.0.0.1, port: 0, allowAnonymous: loopback}\nadmin: {enabled: false}\ndevices: []\nbridges: [b.yaml]\ngateway: {dataDir: data}\n',
  );
  const restarts: string[] = [];
  const gateway = new Gateway(loadConfig(join(root, 'gateway.yaml'), { kinds: componentKinds, env: {} }), logger, 'test', {
    onRestartNeeded: (why) => restarts.push(why),
  });
  await gateway.start();
  try {
    const device = await connectAsync(`mqtt://127.0.0.1:${gateway.mqttPort}`, { clientId: 'd1' });
    await device.publishAsync('t/1', 'kept', { qos: 1 });
    await device.endAsync();
    await eventually(() => assert.deepEqual(restarts, ['the disk failed to sync the history (EIO: i/o error, fdatasync)']), { timeoutMs: 10_000 });
    assert.equal(gateway.status().buffer.bridges[0]?.sinks[0]?.pending, 1, 'the message waits in the buffer');
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    assert.equal(restarts.length, 1, 'asked once, whatever the sink retries');
  } finally {
    await gateway.stop();
  }
});
