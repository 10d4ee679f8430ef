// A persistent session's queue sent when its device comes back: real aedes (as patched) on the
// SQLite persistence (synchronous FULL), mqtt.js devices on loopback.
//
// Each queued QoS 2 message's packet id must be on disk before its PUBLISH leaves (else a crash
// sends it again under another id, and the device takes it twice). aedes numbered the next
// message only once the one before it was written, so every message had a commit, an fsync, of
// its own: about 260 messages a second on this class of disk. The commits are counted on the
// persistence's own connection: better-sqlite3's exec and pragma wrapped around the real ones
// (the state exposes no count of its commits).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { type IClientOptions, connect, connectAsync } from 'mqtt';
import pino from 'pino';
import { SqlitePersistence } from '../../src/mqtt/persistence/sqlite-persistence.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { openSqlite } from '../../src/sqlite/connection.ts';
import { aedesOnState } from '../harness/aedes-on-state.ts';
import { eventually } from '../harness/eventually.ts';
import { stateBrokers } from '../harness/state-broker.ts';
import { tempDirs } from '../harness/temp.ts';

const dirs = tempDirs('ferry-queue-resume-');
const { start, connectClient } = stateBrokers();

/** aedes on a SqlitePersistence whose connection counts its commits, and those made with fsync (synchronous FULL). */
async function countingBroker(t: { after(f: () => Promise<void>): void }) {
  const db = openSqlite(join(dirs(), 'broker.db'), { synchronous: 'full' });
  const counted = { commits: 0, synced: 0 };
  let level = 'FULL';
  const exec = db.exec.bind(db);
  const pragma = db.pragma.bind(db);
  db.exec = (sql: string) => {
    if (sql === 'COMMIT') {
      counted.commits += 1;
      if (level === 'FULL') counted.synced += 1;
    }
    return exec(sql);
  };
  db.pragma = ((sql: string, options?: { simple?: boolean }) => {
    const set = /^synchronous = (\w+)$/i.exec(sql);
    if (set !== null) level = (set[1] as string).toUpperCase();
    return pragma(sql, options);
  }) as typeof db.pragma;
  const persistence = new SqlitePersistence(db, { logger: pino({ level: 'silent' }), counters: new CounterRegistry() });
  const { port, close } = await aedesOnState(persistence);
  t.after(close);
  return { url: `mqtt://127.0.0.1:${port}`, counted };
}

/** Publishes `count` messages 'n' to `topic` at `qos`, 100 in flight. */
async function publishMany(url: string, topic: string, count: number, qos: 1 | 2, protocolVersion: 4 | 5): Promise<void> {
  const publisher = await connectAsync(url, { clientId: 'publisher', reconnectPeriod: 0, protocolVersion });
  const window: Promise<unknown>[] = [];
  for (let i = 0; i < count; i++) {
    window.push(publisher.publishAsync(topic, String(i), { qos }));
    if (window.length >= 100) await window.shift();
  }
  await Promise.all(window);
  await publisher.endAsync();
}

const MESSAGES = 1000;

for (const protocolVersion of [4, 5] as const) {
  test(`MQTT ${protocolVersion === 5 ? '5' : '3.1.1'}: a resumed queue of ${MESSAGES} QoS 2 messages arrives once each, in order, in far fewer fsynced commits than messages`, async (t) => {
    const { url, counted } = await countingBroker(t);
    const session: IClientOptions = {
      clientId: 'device',
      clean: false,
      reconnectPeriod: 0,
      protocolVersion,
      ...(protocolVersion === 5 ? { properties: { sessionExpiryInterval: 600 } } : {}),
    };
    const away = await connectAsync(url, session);
    await away.subscribeAsync('queued/#', { qos: 2 });
    await away.endAsync();
    await publishMany(url, 'queued/x', MESSAGES, 2, protocolVersion);

    const before = { ...counted };
    const device = connect(url, session);
    t.after(() => void device.end(true));
    const received: string[] = [];
    device.on('message', (_topic, payload, packet) => {
      assert.equal(packet.qos, 2);
      received.push(payload.toString());
    });
    await eventually(() => assert.equal(received.length, MESSAGES), { timeoutMs: 60_000 });
    // The PUBCOMPs of the last ones, so that every exchange's writes are counted.
    await device.endAsync();
    assert.deepEqual(
      received,
      Array.from({ length: MESSAGES }, (_, i) => String(i)),
    );
    const synced = counted.synced - before.synced;
    const commits = counted.commits - before.commits;
    // One for each message's packet id and one for its PUBREL state before: 1,000 fsyncs and
    // 2,000 commits here. Now a batch of messages is numbered in one commit, and the PUBRECs
    // they bring back in one read of the socket are stored in one.
    assert.ok(synced < MESSAGES / 10, `fsynced commits while the queue was sent: ${synced} for ${MESSAGES} messages`);
    assert.ok(commits < MESSAGES / 5, `commits while the queue was sent: ${commits} for ${MESSAGES} messages`);
  });
}

test('MQTT 5: a resumed queue longer than the broker holds for a Receive Maximum of 1 all arrives, while the device is slow to acknowledge', async () => {
  // Past 1,000 messages waiting for a slot, aedes discards a message for the client (and its
  // copy in the session's queue): the queue was read as fast as the disk allowed whatever the
  // device took, and a device on a slow link lost the messages past 1,000.
  const queued = 1100;
  const path = join(dirs(), 'broker.db');
  const broker = await start(path);
  const session: IClientOptions = { clientId: 'slow', clean: false, protocolVersion: 5, properties: { sessionExpiryInterval: 600, receiveMaximum: 1 } };
  const away = await connectClient(broker.url, session);
  await away.client.subscribeAsync('queued/#', { qos: 1 });
  await away.client.endAsync();
  await publishMany(broker.url, 'queued/x', queued, 1, 5);

  const discarded = () => broker.counters.get('mqtt.deliveries.discarded{reason=receive_queue_full}');
  const back = await connectClient(broker.url, session);
  // mqtt.js sends a PUBACK when its handler calls back: the first one is held back a while, as
  // a device on a slow link would, or until the broker discarded something.
  let holding = true;
  const held: (() => void)[] = [];
  back.client.handleMessage = (_packet, callback) => {
    if (holding) held.push(() => callback());
    else callback();
  };
  for (const end = Date.now() + 3000; Date.now() < end && discarded() === 0; ) await sleep(50);
  holding = false;
  for (const release of held) release();
  await eventually(() => assert.equal(back.seen.length, queued), { timeoutMs: 30_000 });
  assert.equal(discarded(), 0, 'messages discarded for the device');
  assert.deepEqual(
    back.seen,
    Array.from({ length: queued }, (_, i) => `queued/x ${i}`),
  );
});
