// The embedded broker with its state in broker.db (issue 17): what a client was promised before
// a graceful restart is there after it. Real aedes, real SQLite, mqtt.js clients on loopback;
// the broker is closed and started again on the same file. (Crashes: test/issues/17-broker-state.test.ts.)
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readdirSync, writeFileSync } from 'node:fs';
import { type Socket, createConnection } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { deviceSchema } from '../../src/config/schema.ts';
import { DeviceAuthenticator } from '../../src/mqtt/auth.ts';
import { hashPassword } from '../../src/mqtt/password.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { connectPacket, publishPacket } from '../harness/mqtt-wire.ts';
import { committed, stateBrokers, until } from '../harness/state-broker.ts';
import { tempDirs } from '../harness/temp.ts';

const dirs = tempDirs('ferry-broker-state-');
const { start, stop, connectClient } = stateBrokers();

async function publish(url: string, topic: string, payload: string, options: { retain?: boolean; qos?: 0 | 1 | 2; v5?: { messageExpiryInterval: number } } = {}): Promise<void> {
  const { client } = await connectClient(url, { clientId: `pub-${Math.random().toString(36).slice(2)}`, ...(options.v5 ? { protocolVersion: 5 } : {}) });
  await client.publishAsync(topic, payload, {
    qos: options.qos ?? 1,
    retain: options.retain ?? false,
    ...(options.v5 ? { properties: { messageExpiryInterval: options.v5.messageExpiryInterval } } : {}),
  });
  await client.endAsync();
}

test('a retained message is committed when its PUBACK comes, and is retained after a restart', async () => {
  const path = join(dirs(), 'broker.db');
  const first = await start(path);
  await publish(first.url, 'site/door', 'closed', { retain: true });
  assert.deepEqual(committed(path, 'SELECT topic FROM retained'), [{ topic: 'site/door' }]);
  await stop(first);

  const second = await start(path);
  const { client, seen } = await connectClient(second.url, { clientId: 'reader' });
  const retained: boolean[] = [];
  client.on('message', (_t, _p, packet) => retained.push(packet.retain));
  await client.subscribeAsync('site/#', { qos: 1 });
  await until(() => seen.length === 1, 'the retained message');
  assert.deepEqual(seen, ['site/door closed']);
  assert.deepEqual(retained, [true]);
  await client.endAsync();
  await stop(second);
});

for (const [protocol, options] of [
  ['MQTT 3.1.1, Clean Session 0', { protocolVersion: 4, clean: false }],
  ['MQTT 5, Session Expiry Interval 300 s', { protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 300 } }],
] as const) {
  test(`${protocol}: the session, its subscription and a queued QoS 1 message survive a restart; the message arrives once`, async () => {
    const path = join(dirs(), 'broker.db');
    const first = await start(path);
    const device = await connectClient(first.url, { clientId: 'dev-1', ...options });
    assert.equal(device.sessionPresent, false);
    await device.client.subscribeAsync('cmd/#', { qos: 1 });
    // SUBACK came: the subscription is on disk.
    assert.deepEqual(committed(path, 'SELECT client_id, topic, qos FROM subscriptions'), [{ client_id: 'dev-1', topic: 'cmd/#', qos: 1 }]);
    await device.client.endAsync();
    await publish(first.url, 'cmd/x', 'open');
    // PUBACK came: the copy queued for the offline session is on disk.
    assert.equal(committed(path, "SELECT * FROM queue WHERE client_id = 'dev-1'").length, 1);
    await stop(first);

    const second = await start(path);
    const back = await connectClient(second.url, { clientId: 'dev-1', ...options });
    assert.equal(back.sessionPresent, true);
    await until(() => back.seen.length === 1, 'the queued message');
    // The restored subscription takes new messages too.
    await publish(second.url, 'cmd/y', 'live');
    await until(() => back.seen.length === 2, 'the live message');
    await sleep(200);
    assert.deepEqual(back.seen, ['cmd/x open', 'cmd/y live']);
    await back.client.endAsync();
    await stop(second);

    const third = await start(path);
    const again = await connectClient(third.url, { clientId: 'dev-1', ...options });
    assert.equal(again.sessionPresent, true);
    await sleep(300);
    assert.deepEqual(again.seen, [], 'acknowledged messages are not sent again');
    await again.client.endAsync();
    await stop(third);
  });
}

test('MQTT 5 sessions end at their Session Expiry Interval, whether it passes while the gateway is down or after it started again', async () => {
  const path = join(dirs(), 'broker.db');
  const first = await start(path);
  for (const [id, expiry] of [
    ['short', 1],
    ['medium', 3],
  ] as const) {
    const device = await connectClient(first.url, { clientId: id, protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: expiry } });
    await device.client.subscribeAsync(`cmd/${id}/#`, { qos: 1 });
    await device.client.endAsync();
  }
  await publish(first.url, 'cmd/short/x', 'a');
  await publish(first.url, 'cmd/medium/x', 'b');
  await stop(first);
  await sleep(1200);

  const second = await start(path);
  assert.equal(second.counters.snapshot()['mqtt.sessions.expired'], 1, "the short session's expiry passed while the broker was down");
  const v5 = { protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 60 } } as const;
  const short = await connectClient(second.url, { clientId: 'short', ...v5 });
  assert.equal(short.sessionPresent, false);
  await until(() => second.counters.snapshot()['mqtt.sessions.expired'] === 2, 'the medium session expiring', 5000);
  const medium = await connectClient(second.url, { clientId: 'medium', ...v5 });
  assert.equal(medium.sessionPresent, false);
  await sleep(300);
  assert.deepEqual([...short.seen, ...medium.seen], []);
  assert.deepEqual(committed(path, "SELECT * FROM queue WHERE client_id IN ('short', 'medium')"), []);
  await short.client.endAsync();
  await medium.client.endAsync();
  await stop(second);
});

test('a queued MQTT 5 message past its Message Expiry Interval is not delivered after a restart', async () => {
  const path = join(dirs(), 'broker.db');
  const first = await start(path);
  const options = { clientId: 'dev-exp', protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 300 } } as const;
  const device = await connectClient(first.url, options);
  await device.client.subscribeAsync('cmd/#', { qos: 1 });
  await device.client.endAsync();
  await publish(first.url, 'cmd/stale', 'x', { v5: { messageExpiryInterval: 1 } });
  await publish(first.url, 'cmd/fresh', 'y', { v5: { messageExpiryInterval: 300 } });
  await stop(first);
  await sleep(1200);

  const second = await start(path);
  const back = await connectClient(second.url, options);
  assert.equal(back.sessionPresent, true);
  await until(() => back.seen.length >= 1, 'the unexpired message');
  await sleep(200);
  assert.deepEqual(back.seen, ['cmd/fresh y']);
  await back.client.endAsync();
  await stop(second);
});

test('a will delayed past a graceful shutdown is published after the restart, unless its client came back in time', async () => {
  const path = join(dirs(), 'broker.db');
  const first = await start(path);
  for (const id of ['w1', 'w2']) {
    const { client } = await connectClient(first.url, {
      clientId: id,
      protocolVersion: 5,
      clean: false,
      properties: { sessionExpiryInterval: 60 },
      will: { topic: `status/${id}`, payload: Buffer.from('gone'), qos: 1, retain: false, properties: { willDelayInterval: 2 } },
    });
    // aedes reports "session present" for a session with subscriptions.
    await client.subscribeAsync(`cmd/${id}`, { qos: 1 });
  }
  // Closing the broker ends their connections without a DISCONNECT from them: the wills wait their delay.
  await stop(first);

  const second = await start(path);
  const watcher = await connectClient(second.url, { clientId: 'watcher' });
  await watcher.client.subscribeAsync('status/#', { qos: 1 });
  const w2 = await connectClient(second.url, { clientId: 'w2', protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 60 } });
  assert.equal(w2.sessionPresent, true);
  await until(() => watcher.seen.length === 1, "w1's will", 5000);
  await sleep(500);
  assert.deepEqual(watcher.seen, ['status/w1 gone']);
  assert.ok(second.tapped.includes('status/w1 gone'), 'the bridges get the will as they get any message');
  assert.equal(second.counters.snapshot()['mqtt.wills.carried_over{result=published}'], 1);
  await w2.client.endAsync();
  await watcher.client.endAsync();
  await stop(second);
});

test("a saved session stays its login's across a restart: an anonymous client is refused it, another login starts clean", async () => {
  const counters = new CounterRegistry();
  const profiles = [
    deviceSchema().parse({ name: 'sensor', clientId: 'sensor-*', credentials: [{ username: 'sensor-1', passwordHash: await hashPassword('one') }] }),
    deviceSchema().parse({
      name: 'staff',
      credentials: [{ username: 'tech', passwordHash: await hashPassword('tech'), clientId: '*' }],
      acl: { publish: ['#'], subscribe: ['#'] },
    }),
  ];
  const auth = () =>
    new DeviceAuthenticator({ profiles, allowAnonymous: true, anonymousAcl: { publish: ['#'], subscribe: ['#'] }, maxConnectionsPerAddress: 100, maxAuthFailures: 10, counters });
  const path = join(dirs(), 'broker.db');
  const first = await start(path, { auth: auth() });
  const device = await connectClient(first.url, { clientId: 'sensor-1', username: 'sensor-1', password: 'one', clean: false });
  await device.client.subscribeAsync('devices/sensor-1/commands/#', { qos: 1 });
  await device.client.endAsync();
  assert.deepEqual(committed(path, 'SELECT client_id, owner FROM sessions'), [{ client_id: 'sensor-1', owner: 'sensor-1' }]);
  await stop(first);

  const second = await start(path, { auth: auth(), counters });
  await assert.rejects(connectClient(second.url, { clientId: 'sensor-1', clean: false }), /Identifier rejected/);
  await assert.rejects(connectClient(second.url, { clientId: 'sensor-1', clean: true }), /Identifier rejected/);
  const back = await connectClient(second.url, { clientId: 'sensor-1', username: 'sensor-1', password: 'one', clean: false });
  assert.equal(back.sessionPresent, true);
  await back.client.endAsync();
  await stop(second);

  const third = await start(path, { auth: auth(), counters });
  const tech = await connectClient(third.url, { clientId: 'sensor-1', username: 'tech', password: 'tech', clean: false });
  assert.equal(tech.sessionPresent, false);
  assert.equal(counters.snapshot()['mqtt.sessions.discarded{reason=owner_changed}'], 1);
  await tech.client.endAsync();
  // Saved with the session when it started, committed with the next write that must be on disk, or soon after.
  await until(
    () => JSON.stringify(committed(path, 'SELECT client_id, owner FROM sessions')) === JSON.stringify([{ client_id: 'sensor-1', owner: 'tech' }]),
    "the tech's ownership on disk",
  );
  assert.deepEqual(committed(path, 'SELECT topic FROM subscriptions'), [], "the device's subscription went with its session");
  await stop(third);
});

test('with memory persistence nothing is kept: the session is gone after a restart', async () => {
  const memory = () => start(null);
  const first = await memory();
  const device = await connectClient(first.url, { clientId: 'dev-m', clean: false });
  await device.client.subscribeAsync('cmd/#', { qos: 1 });
  await device.client.endAsync();
  await stop(first);
  const second = await memory();
  const back = await connectClient(second.url, { clientId: 'dev-m', clean: false });
  assert.equal(back.sessionPresent, false);
  await back.client.endAsync();
  await stop(second);
});

/** A raw MQTT connection, for packets a client library would not let a test send at will. */
async function rawClient(port: number, clientId: string): Promise<{ socket: Socket; received: (bytes: readonly number[]) => Promise<void> }> {
  const socket = createConnection({ host: '127.0.0.1', port });
  let data = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => (data = Buffer.concat([data, chunk])));
  await once(socket, 'connect');
  const received = async (bytes: readonly number[]) => {
    const wanted = Buffer.from(bytes);
    await until(() => data.includes(wanted), `packet ${wanted.toString('hex')} (got ${data.toString('hex')})`);
    data = data.subarray(data.indexOf(wanted) + wanted.length);
  };
  socket.write(connectPacket(clientId, 60, false));
  await received([0x20, 0x02]);
  return { socket, received };
}

test('QoS 2: a message answered with PUBREC before a restart is not taken again when sent again after it, and its PUBREL is completed', async () => {
  const path = join(dirs(), 'broker.db');
  const first = await start(path);
  const device = await rawClient(first.broker.port, 'q2-dev');
  device.socket.write(publishPacket('devices/q2-dev/t', Buffer.from('once'), { qos: 2, id: 7 }));
  await device.received([0x50, 0x02, 0x00, 0x07]);
  device.socket.destroy();
  await stop(first);

  const second = await start(path);
  const back = await rawClient(second.broker.port, 'q2-dev');
  // The device missed the PUBREC and sends the message again, DUP set: PUBREC, and not taken twice.
  const dup = publishPacket('devices/q2-dev/t', Buffer.from('once'), { qos: 2, id: 7 });
  dup[0] = (dup[0] as number) | 0x08;
  back.socket.write(dup);
  await back.received([0x50, 0x02, 0x00, 0x07]);
  back.socket.write(Buffer.from([0x62, 0x02, 0x00, 0x07]));
  await back.received([0x70, 0x02, 0x00, 0x07]);
  assert.deepEqual(first.tapped, ['devices/q2-dev/t once']);
  assert.deepEqual(second.tapped, []);
  assert.equal(second.counters.snapshot()['mqtt.publish.duplicates{qos=2}'], 1);
  assert.deepEqual(committed(path, 'SELECT * FROM incoming'), []);
  back.socket.destroy();
  await stop(second);
});

test('a corrupt broker.db is moved aside and the broker starts with an empty state', async () => {
  const dir = dirs();
  const path = join(dir, 'broker.db');
  writeFileSync(path, Buffer.alloc(8192, 0x5a));
  const running = await start(path);
  assert.equal(running.counters.snapshot()['mqtt.state.recovered_from_corruption'], 1);
  assert.equal(readdirSync(dir).filter((f) => f.startsWith('broker.db.corrupt-')).length, 1);
  await publish(running.url, 'site/door', 'open', { retain: true });
  await stop(running);
  const again = await start(path);
  assert.equal(again.counters.snapshot()['mqtt.state.recovered_from_corruption'], undefined);
  await stop(again);
});

test('the Session Expiry Interval a DISCONNECT sets is the one that counts after a restart', async () => {
  const path = join(dirs(), 'broker.db');
  const first = await start(path);
  const v5 = { protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 300 } } as const;
  for (const [id, atDisconnect] of [
    ['ends-now', 0],
    ['shortened', 1],
  ] as const) {
    const device = await connectClient(first.url, { clientId: id, ...v5 });
    await device.client.subscribeAsync(`cmd/${id}`, { qos: 1 });
    await device.client.endAsync(false, { properties: { sessionExpiryInterval: atDisconnect } });
  }
  await sleep(100);
  await stop(first);
  await sleep(1200);
  const second = await start(path);
  for (const id of ['ends-now', 'shortened']) {
    const back = await connectClient(second.url, { clientId: id, ...v5 });
    assert.equal(back.sessionPresent, false, id);
    await back.client.endAsync();
  }
  await stop(second);
});
