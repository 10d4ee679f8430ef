// The buffer's integrity check at startup: every page read before a start accepts connections,
// unless the buffer is large and was closed cleanly; then the check runs in a process of its own
// once the gateway is up, and a corrupt buffer is moved aside at the next start.
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, openSync, readdirSync, closeSync, writeSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { connectAsync } from 'mqtt';
import pino from 'pino';
import { bufferPolicySchema, bufferSettingsSchema } from '../../src/buffer/config.ts';
import { DEFER_CHECK_ABOVE_BYTES, bufferPath, checkBufferLater, openBuffer } from '../../src/buffer/open.ts';
import { cursorSource } from '../../src/buffer/reader.ts';
import { streamCursor } from '../../src/buffer/stream-reader.ts';
import { BufferWriter } from '../../src/buffer/writer.ts';
import { createDelivery } from '../../src/core/delivery.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import { loadConfig } from '../../src/config/load.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { EXIT_RESTART } from '../../src/cli/run.ts';
import { Gateway } from '../../src/runtime/gateway.ts';
import { componentKinds } from '../../src/runtime/registry.ts';
import { checkMarkerPath, readAhead } from '../../src/sqlite/open-checked.ts';
import { trackedDeliveries } from '../conformance/deliveries.ts';
import { eventually } from '../harness/eventually.ts';
import { startFerry } from '../harness/ferry-process.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-deferred-check-');
const logger = pino({ level: 'silent' });
const MiB = 1024 * 1024;

/** A buffer holding `rows` messages of 1 KiB for bridge `b`, closed cleanly. */
function filledBuffer(dir: string, rows: number): void {
  const { store } = openBuffer(dir, logger);
  const payload = Buffer.alloc(1024, 1);
  // One append a message, so a pack a message: the packs table gets many leaf pages.
  store.writeTransaction(() => {
    for (let i = 0; i < rows; i++) store.append([{ bridge: 'b', envelope: createEnvelope({ id: `id-${i}`, topic: 't', payload, origin: { source: 'test' } }) }]);
  });
  store.close();
}

/**
 * Overwrites the header of a leaf page of the packs table: quick_check finds it, opening and
 * reading the schema do not. `last`: the last leaf, which the next append writes into.
 */
function corruptALeaf(dir: string, which: 'middle' | 'last' = 'middle'): void {
  const db = new Database(bufferPath(dir), { readonly: true });
  const order = which === 'last' ? 'ORDER BY pageno DESC LIMIT 1' : 'ORDER BY pageno LIMIT 1 OFFSET 20';
  const page = db.prepare(`SELECT pageno FROM dbstat WHERE name = 'packs' AND pagetype = 'leaf' ${order}`).pluck().get() as number;
  const pageSize = db.pragma('page_size', { simple: true }) as number;
  db.close();
  const fd = openSync(bufferPath(dir), 'r+');
  writeSync(fd, Buffer.alloc(16, 0xff), 0, 16, (page - 1) * pageSize);
  closeSync(fd);
}

test('a large buffer closed cleanly opens without the full check; the check in the background finds it corrupt, and the next open moves it aside', async () => {
  const dir = tempDir();
  filledBuffer(dir, 2_000);
  corruptALeaf(dir);
  const opened = openBuffer(dir, logger, { deferCheckAbove: MiB });
  assert.ok(opened.checkDeferred !== undefined && opened.checkDeferred.bytes > MiB, 'the check was left for later');
  assert.equal(opened.movedAside, undefined);
  const counters = new CounterRegistry();
  const verdicts: boolean[] = [];
  const result = await checkBufferLater(dir, logger, counters, (passed) => verdicts.push(passed)).done;
  assert.deepEqual(verdicts, [false], 'the acks held meanwhile are refused');
  assert.equal(result.outcome, 'corrupt', JSON.stringify(result));
  assert.equal(counters.get('buffer.integrity_checks{result=corrupt}'), 1);
  assert.ok(existsSync(checkMarkerPath(bufferPath(dir))), 'marked for a full check');
  // A check stopped (the gateway stops) ends at once, without a verdict.
  const stopped = checkBufferLater(dir, logger, counters, (passed) => verdicts.push(passed));
  stopped.stop();
  assert.equal((await stopped.done).outcome, 'stopped');
  assert.deepEqual(verdicts, [false, false], 'stopped before the end: refused too');
  assert.equal(counters.get('buffer.integrity_checks{result=failed}'), 0, 'a stopped check is not counted');
  opened.store.close();

  const again = openBuffer(dir, logger, { deferCheckAbove: MiB });
  try {
    assert.equal(again.checkDeferred, undefined, 'the marker made it check in full');
    assert.ok(again.movedAside !== undefined && existsSync(again.movedAside), 'moved aside');
    assert.equal(again.store.usage('b').messages, 0, 'a fresh buffer');
    assert.equal(existsSync(checkMarkerPath(bufferPath(dir))), false, 'the marker went with it');
  } finally {
    again.store.close();
  }
});

test('a buffer whose WAL still holds frames (a crash, a kill, a power cut) is checked in full at open, as is a small one and one opened without deferral', () => {
  // The files a killed process leaves: copied while a connection that wrote is still open.
  const crashed = tempDir();
  filledBuffer(crashed, 2_000);
  corruptALeaf(crashed);
  const writer = new Database(bufferPath(crashed));
  writer.pragma('wal_autocheckpoint = 0');
  writer.prepare("INSERT INTO cursors (bridge, sink, seq) VALUES ('late', 'out', 0)").run();
  const copy = tempDir();
  mkdirSync(copy, { recursive: true });
  for (const suffix of ['', '-wal']) copyFileSync(bufferPath(crashed) + suffix, bufferPath(copy) + suffix);
  writer.close();
  const afterCrash = openBuffer(copy, logger, { deferCheckAbove: MiB });
  afterCrash.store.close();
  assert.equal(afterCrash.checkDeferred, undefined);
  assert.ok(afterCrash.movedAside !== undefined, 'the full check ran and found the damage');

  const small = tempDir();
  filledBuffer(small, 2_000);
  corruptALeaf(small);
  const underTheSize = openBuffer(small, logger, { deferCheckAbove: 64 * MiB });
  underTheSize.store.close();
  assert.ok(underTheSize.movedAside !== undefined && underTheSize.checkDeferred === undefined);

  const library = tempDir();
  filledBuffer(library, 2_000);
  corruptALeaf(library);
  const notDeferred = openBuffer(library, logger);
  notDeferred.store.close();
  assert.ok(notDeferred.movedAside !== undefined && notDeferred.checkDeferred === undefined);
});

test('a gateway: a cleanly closed buffer over the size starts without the check, reports a corrupt one from the background and asks for a restart, and the next start moves it aside', async () => {
  const root = tempDir();
  const data = join(root, 'data');
  filledBuffer(data, Math.ceil((DEFER_CHECK_ABOVE_BYTES * 1.1) / 1100));
  corruptALeaf(data);
  writeFileSync(
    join(root, 'gateway.yaml'),
    'mqtt: {host: 127.0.0.1, port: 0, allowAnonymous: loopback}\nadmin: {enabled: false}\nshutdown: {drainTimeoutMs: 500}\ndevices: []\nbridges: []\ngateway: {dataDir: data}\n',
  );
  const restarts: string[] = [];
  const start = async () => {
    const gateway = new Gateway(loadConfig(join(root, 'gateway.yaml'), { kinds: componentKinds, env: {} }), logger, 'test', { onRestartNeeded: (why) => restarts.push(why) });
    await gateway.start();
    return gateway;
  };
  const first = await start();
  try {
    assert.equal(first.status().buffer.movedAside, undefined, 'not checked before the start');
    await eventually(() => assert.equal(first.counters.get('buffer.integrity_checks{result=corrupt}'), 1), { timeoutMs: 30_000 });
    assert.equal(first.health().ready, false, 'no longer ready: nothing is acknowledged into the corrupt buffer');
    assert.deepEqual(restarts, ['the integrity check after the start found the buffer corrupt']);
  } finally {
    await first.stop();
  }
  const second = await start();
  try {
    assert.ok(second.status().buffer.movedAside?.startsWith(join(data, 'buffer.db.corrupt-')));
    assert.equal(second.counters.get('buffer.recovered_from_corruption'), 1);
    assert.equal(second.counters.get('buffer.integrity_checks{result=corrupt}'), 0, 'checked at the start this time');
  } finally {
    await second.stop();
  }
  assert.equal(readdirSync(data).filter((f) => f.endsWith('-check')).length, 0);
  assert.equal(restarts.length, 1, 'the second start found nothing to restart for');
});

test('ferry run: a corrupt buffer found after the start ends the process with exit code 75, and the next run moves it aside and acknowledges again', async () => {
  const root = tempDir();
  const data = join(root, 'data');
  filledBuffer(data, Math.ceil((DEFER_CHECK_ABOVE_BYTES * 1.1) / 1100));
  corruptALeaf(data);
  const config = join(root, 'gateway.yaml');
  writeFileSync(config, 'mqtt: {host: 127.0.0.1, allowAnonymous: loopback}\nshutdown: {drainTimeoutMs: 500}\ndevices: []\nbridges: [b.yaml]\ngateway: {dataDir: data}\n');
  writeFileSync(join(root, 'b.yaml'), 'name: b\nfrom: { mqtt: { topics: ["t/#"] } }\nto: [{ history: {} }]\n');
  const first = await startFerry(['--config', config]);
  const ended = await Promise.race([first.exited, sleep(60_000).then(() => 'still running after 60 s')]);
  if (typeof ended === 'string') first.child.kill('SIGKILL');
  assert.equal(ended, EXIT_RESTART);
  // The check in the background or the sink reading the buffer: whichever meets the damage first.
  const said = first.logs.find((l) => /^(the integrity check after the start|a read for sink history) found the buffer corrupt: stopping/.test(String(l['msg'])));
  assert.ok(said !== undefined, 'the reason and the exit code are logged');
  assert.match(String(said['msg']), /exit code 75 asks the service manager to start the gateway again/);
  const second = await startFerry(['--config', config]);
  try {
    assert.ok(
      readdirSync(data).some((f) => f.startsWith('buffer.db.corrupt-')),
      'moved aside before the start',
    );
    const device = await connectAsync(second.mqttUrl, { clientId: 'after-restart' });
    await device.publishAsync('t/1', 'stored again', { qos: 1 });
    await device.endAsync();
  } finally {
    second.child.kill('SIGTERM');
    assert.equal(await second.exited, 0);
  }
});

test('while the check runs, stored QoS 1 messages wait for their acknowledgement: a passed check sends them; after a failed one they and every later one wait for the stop, and nothing more is stored', async () => {
  for (const synchronous of ['full', 'normal'] as const) {
    const { store } = openBuffer(tempDir(), logger);
    const writer = new BufferWriter(store, bufferSettingsSchema().parse({ synchronous }), logger, new CounterRegistry());
    try {
      store.registerBridge('b', ['out']);
      writer.setPolicy('b', bufferPolicySchema().parse({}));
      const enqueueAll = async (tracked: ReturnType<typeof trackedDeliveries>) => {
        const committed = writer.appended('b');
        for (const d of tracked.deliveries) writer.enqueue('b', d);
        await committed;
      };
      const passing = writer.holdAcks();
      const first = trackedDeliveries(20);
      await enqueueAll(first);
      assert.equal(store.usage('b').messages, 20, `${synchronous}: stored`);
      // QoS 0 has no acknowledgement to hold back.
      let qos0Acked = false;
      writer.enqueue('b', createDelivery(createEnvelope({ topic: 't', payload: 'x', origin: { source: 'test', qos: 0 } }), { onAck: () => (qos0Acked = true), onNack: () => {} }));
      await writer.appended('b');
      assert.equal(qos0Acked, true, `${synchronous}: QoS 0 acked at its commit`);
      assert.equal(first.acked.length + first.nacked.size, 0, `${synchronous}: held while the check runs`);
      assert.equal(writer.state, 'ok');
      passing(true);
      await first.settled();
      assert.equal(first.acked.length, 20, `${synchronous}: acked once it passed`);

      const failing = writer.holdAcks();
      const second = trackedDeliveries(10);
      await enqueueAll(second);
      failing(false);
      assert.equal(writer.state, 'write-failed');
      // Not refused, which would close the devices' connections and bring the messages back at
      // once: held until the gateway stops, and nothing more is stored.
      const third = trackedDeliveries(5);
      for (const d of third.deliveries) writer.enqueue('b', d);
      writer.flushNow();
      await sleep(50);
      assert.equal(second.acked.length + second.nacked.size + third.acked.length + third.nacked.size, 0, `${synchronous}: held`);
      assert.equal(store.usage('b').messages, 31, `${synchronous}: the later ones not stored`);
      assert.equal(writer.held, 5);
      writer.close();
      await Promise.all([second.settled(), third.settled()]);
      assert.deepEqual([second.nacked.size, third.nacked.size], [10, 5], `${synchronous}: refused as the gateway stops`);
    } finally {
      writer.close();
      store.close();
    }
  }
});

test('ferry run: a device publishing QoS 1 while the background check runs gets its PUBACK once the check passed', async () => {
  const root = tempDir();
  const data = join(root, 'data');
  filledBuffer(data, Math.ceil((DEFER_CHECK_ABOVE_BYTES * 1.1) / 1100));
  mkdirSync(join(root, 'bridges'));
  writeFileSync(join(root, 'bridges', 'history.yaml'), 'name: h\nfrom: {mqtt: {topics: ["devices/#"]}}\nto: [{history: {}}]\n');
  writeFileSync(
    join(root, 'gateway.yaml'),
    'mqtt: {host: 127.0.0.1, port: 0, allowAnonymous: loopback}\nadmin: {enabled: false}\nshutdown: {drainTimeoutMs: 500}\ndevices: []\nbridges: [bridges]\ngateway: {dataDir: data}\n',
  );
  const gateway = new Gateway(loadConfig(join(root, 'gateway.yaml'), { kinds: componentKinds, env: {} }), logger, 'test');
  await gateway.start();
  const device = await connectAsync(`mqtt://127.0.0.1:${gateway.mqttPort}`, { clientId: 'd1', reconnectPeriod: 0 });
  try {
    await device.publishAsync('devices/d1/telemetry', 'during the check', { qos: 1 });
    assert.equal(gateway.counters.get('buffer.integrity_checks{result=ok}'), 1, 'acknowledged only after the check passed');
    assert.equal(gateway.health().ready, true);
  } finally {
    await device.endAsync();
    await gateway.stop();
  }
});

test('the check reads a database ahead only when it fits in half the memory available', () => {
  const dir = tempDir();
  filledBuffer(dir, 1000); // about 1.3 MB
  const path = bufferPath(dir);
  assert.equal(readAhead(path, 64 * MiB), true);
  assert.equal(readAhead(path, 2 * MiB), false, 'read ahead with less than twice its size available');
});

test('an append that finds the buffer corrupt stores and acknowledges nothing more, marks it, asks once for a restart, and the next open moves it aside', async () => {
  const dir = tempDir();
  filledBuffer(dir, 2_000);
  corruptALeaf(dir, 'last');
  // Opened without the check, as a large buffer closed cleanly is: the append meets the damage first.
  const opened = openBuffer(dir, logger, { deferCheckAbove: 0 });
  assert.ok(opened.checkDeferred !== undefined);
  const counters = new CounterRegistry();
  const writer = new BufferWriter(opened.store, bufferSettingsSchema().parse({}), logger, counters);
  let open = true;
  const close = () => {
    if (!open) return;
    open = false;
    writer.close();
    opened.store.close();
  };
  try {
    writer.setPolicy('b', bufferPolicySchema().parse({}));
    const restarts: string[] = [];
    writer.onRestartNeeded = (why) => restarts.push(why);
    const first = trackedDeliveries(3);
    for (const d of first.deliveries) writer.enqueue('b', d);
    writer.flushNow();
    assert.equal(counters.get('buffer.errors{reason=corrupt}'), 1);
    assert.deepEqual(restarts, ['an append found the buffer corrupt']);
    assert.equal(writer.state, 'write-failed');
    assert.ok(existsSync(checkMarkerPath(bufferPath(dir))), 'marked for a full check at the next start');
    const later = trackedDeliveries(2);
    for (const d of later.deliveries) writer.enqueue('b', d);
    writer.flushNow();
    await sleep(1_200);
    assert.equal(first.acked.length + later.acked.length, 0);
    assert.equal(writer.held, 5, 'held unacknowledged, not tried again');
    assert.equal(counters.get('buffer.errors{reason=corrupt}'), 1, 'no retry met the damage again');
    close();
    await first.settled();
    assert.equal(first.nacked.size, 3, 'refused at the stop: the devices send them again');
  } finally {
    close();
  }
  const reopened = openBuffer(dir, logger, { deferCheckAbove: 0 });
  reopened.store.close();
  assert.ok(reopened.movedAside?.startsWith(join(dir, 'buffer.db.corrupt-')), 'checked in full and moved aside');
});

/** A filled buffer with a leaf in the middle overwritten, opened without the check, with its writer and the restarts it asks for. */
function damagedBuffer() {
  const dir = tempDir();
  filledBuffer(dir, 2_000);
  corruptALeaf(dir, 'middle');
  const opened = openBuffer(dir, logger, { deferCheckAbove: 0 });
  const counters = new CounterRegistry();
  const writer = new BufferWriter(opened.store, bufferSettingsSchema().parse({}), logger, counters);
  const restarts: string[] = [];
  writer.onRestartNeeded = (why) => restarts.push(why);
  return { dir, opened, counters, writer, restarts };
}

test('a sink reading a corrupt page ends its deliveries with the error, and the writer stores and acknowledges nothing more, marks the buffer and asks once for a restart', async () => {
  for (const reader of [cursorSource, streamCursor]) {
    const { dir, opened, counters, writer, restarts } = damagedBuffer();
    const policy = bufferPolicySchema().parse({});
    opened.store.registerBridge('b', ['out']);
    writer.setPolicy('b', policy);
    const later = trackedDeliveries(2);
    try {
      const source = reader({ store: opened.store, writer, bridge: 'b', sink: 'out', policy, logger, counters });
      let delivered = 0;
      const failure = await new Promise<unknown>((resolve) => {
        source.deliveries.subscribe({
          next: (d) => {
            delivered += 1;
            d.ack();
          },
          error: resolve,
          complete: () => resolve(new Error('completed without an error')),
        });
      });
      assert.equal((failure as { code?: string }).code, 'SQLITE_CORRUPT', `${reader.name}: ${String(failure)}`);
      assert.ok(delivered < 2_000, `${reader.name}: delivered ${delivered}, past the damage`);
      assert.deepEqual(restarts, ['a read for sink out found the buffer corrupt'], reader.name);
      assert.equal(counters.get('buffer.errors{reason=corrupt}'), 1);
      assert.equal(writer.state, 'write-failed');
      assert.ok(existsSync(checkMarkerPath(bufferPath(dir))), 'marked for a full check at the next start');
      for (const d of later.deliveries) writer.enqueue('b', d);
      writer.flushNow();
      assert.equal(later.acked.length, 0, 'nothing acknowledged after the damage was found');
      // Found again (another sink, an append): reported once.
      writer.corrupted(failure, 'an append');
      assert.equal(restarts.length, 1);
    } finally {
      writer.close();
      opened.store.close();
    }
    await later.settled();
    assert.equal(later.nacked.size, 2, 'refused at the stop: the devices send them again');
    const reopened = openBuffer(dir, logger, { deferCheckAbove: 0 });
    reopened.store.close();
    assert.ok(reopened.movedAside?.startsWith(join(dir, 'buffer.db.corrupt-')), 'checked in full and moved aside');
  }
});

test('the buffer upkeep expiring messages through a corrupt page asks for a restart as a read does', async () => {
  const { dir, opened, counters, writer, restarts } = damagedBuffer();
  try {
    await sleep(20);
    writer.setPolicy('b', bufferPolicySchema().parse({ maxAgeMs: 10 }));
    await eventually(() => assert.deepEqual(restarts, ['the buffer upkeep found the buffer corrupt']));
    assert.equal(counters.get('buffer.errors{reason=corrupt}'), 1);
    assert.equal(writer.state, 'write-failed');
    assert.ok(existsSync(checkMarkerPath(bufferPath(dir))), 'marked for a full check at the next start');
  } finally {
    writer.close();
    opened.store.close();
  }
});
