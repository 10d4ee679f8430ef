// Issue 17: a persistent session survives a crash of the gateway from the moment its client has
// the CONNACK. Against the built CLI (`ferry run`, broker state on SQLite) with devices on raw
// sockets: the gateway is killed with SIGKILL as soon as the device reads its CONNACK, then
// started again on the same data directory.
//
// The session's record (which says the session exists, when it has no subscriptions yet, and
// which login owns it) used to be written after the CONNACK had left and committed up to 10 ms
// later: a crash in between lost the session, and its device was told Session Present 0 when
// it came back (MQTT 5 requires it to discard its session state then, messages in flight
// included). With a will, the record was written before the CONNACK but its owner after: an
// anonymous client could then resume the device's session.
//
// A Clean Start discarding a stored session had the same gap the other way: the session's
// record was removed up to 10 ms after the CONNACK, its queue only as aedes read it after the
// CONNACK. A crash in between brought the session back: the device, told Session Present 0,
// was later told Session Present 1 and sent the old session's queued messages.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { type Socket, connect } from 'node:net';
import { join } from 'node:path';
import { after, test } from 'node:test';
import Database from 'better-sqlite3';
import mqttPacket from 'mqtt-packet';
import { eventually } from '../harness/eventually.ts';
import { type RunningFerry, startFerry } from '../harness/ferry-process.ts';
import { credential, writeGatewayTree } from '../harness/gateway-tree.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-issue-17-connack-');
const running = new Set<RunningFerry>();
const sockets = new Set<Socket>();
after(() => {
  for (const socket of sockets) socket.destroy();
  for (const gw of running) gw.child.kill('SIGKILL');
});

async function start(args: readonly string[]): Promise<RunningFerry> {
  const gw = await startFerry(args);
  running.add(gw);
  return gw;
}

interface Device {
  readonly received: mqttPacket.Packet[];
  readonly connack: mqttPacket.IConnackPacket;
  send(packet: mqttPacket.Packet): void;
  close(): Promise<void>;
}

/**
 * A device on a raw socket: CONNECT, and resolves with the CONNACK. With `killOnConnack`, the
 * gateway gets SIGKILL in the same turn the CONNACK is read, before anything else.
 */
async function device(gw: RunningFerry, hello: Partial<mqttPacket.IConnectPacket>, killOnConnack = false): Promise<Device> {
  const version = hello.protocolVersion ?? 4;
  const socket = connect(Number(new URL(gw.mqttUrl).port), '127.0.0.1');
  sockets.add(socket);
  socket.on('error', () => {});
  await once(socket, 'connect');
  const received: mqttPacket.Packet[] = [];
  const parser = mqttPacket.parser({ protocolVersion: version });
  parser.on('packet', (p: mqttPacket.Packet) => {
    if (p.cmd === 'connack' && killOnConnack) gw.child.kill('SIGKILL');
    received.push(p);
  });
  socket.on('data', (chunk: Buffer) => parser.parse(chunk));
  const send = (packet: mqttPacket.Packet) => socket.write(mqttPacket.generate(packet, { protocolVersion: version }));
  send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: version, clean: false, clientId: '', keepalive: 60, ...hello });
  await eventually(() => assert.equal(received[0]?.cmd, 'connack', `no CONNACK for ${hello.clientId}`));
  return {
    received,
    connack: received[0] as mqttPacket.IConnackPacket,
    send,
    close: async () => {
      // Not once(): an ECONNRESET (a DISCONNECT to a gateway that already closed, as it does
      // after a refused CONNACK) would reject it; the close comes all the same.
      const closed = socket.closed ? Promise.resolve() : new Promise<void>((resolve) => socket.once('close', () => resolve()));
      if (socket.writable) send({ cmd: 'disconnect' });
      socket.end();
      await closed;
      sockets.delete(socket);
    },
  };
}

/** The device's first connection; the gateway is killed once the device has its CONNACK, and started again. */
async function connectThenCrash(gw: RunningFerry, args: readonly string[], hello: Partial<mqttPacket.IConnectPacket>): Promise<RunningFerry> {
  const first = await device(gw, hello, true);
  assert.equal(first.connack.sessionPresent, false, `${hello.clientId}: a new session`);
  assert.ok((first.connack.returnCode ?? first.connack.reasonCode ?? 0) === 0, `${hello.clientId}: accepted`);
  await gw.exited;
  running.delete(gw);
  await first.close();
  return start(args);
}

async function awaitPacket(received: readonly mqttPacket.Packet[], cmd: string, messageId: number): Promise<void> {
  await eventually(() =>
    assert.ok(
      received.some((p) => p.cmd === cmd && (p as { messageId?: number }).messageId === messageId),
      `no ${cmd} ${messageId}`,
    ),
  );
}

/** Without a will; MQTT 5 with Clean Start 1 starts a session that outlives the connection too. */
const SESSIONS: Record<string, Partial<mqttPacket.IConnectPacket>> = {
  'dev-311': { protocolVersion: 4, clean: false },
  'dev-5': { protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 600 } },
  'dev-5-clean-start': { protocolVersion: 5, clean: true, properties: { sessionExpiryInterval: 600 } },
};

test('a persistent session without a will, its gateway killed as its device read the CONNACK: Session Present 1 after the restart, and the session keeps what comes later', {
  timeout: 120_000,
}, async () => {
  const root = tempDir();
  const config = writeGatewayTree(root, '{allowAnonymous: true}', {});
  const args = ['--config', config, '--data-dir', join(root, 'data')];
  let gw = await start(args);
  // One device per run of the gateway: each crash comes right after that device's CONNACK.
  for (const [clientId, hello] of Object.entries(SESSIONS)) gw = await connectThenCrash(gw, args, { ...hello, clientId });

  const present: Record<string, boolean> = {};
  for (const [clientId, hello] of Object.entries(SESSIONS)) {
    const back = await device(gw, { ...hello, clientId, clean: false });
    present[clientId] = back.connack.sessionPresent;
    back.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: `later/${clientId}`, qos: 1 }] });
    await awaitPacket(back.received, 'suback', 1);
    await back.close();
  }
  assert.deepEqual(present, { 'dev-311': true, 'dev-5': true, 'dev-5-clean-start': true }, 'Session Present after the crash');
  const publisher = await device(gw, { clientId: 'publisher', clean: true });
  for (const [index, clientId] of Object.keys(SESSIONS).entries()) {
    publisher.send({ cmd: 'publish', topic: `later/${clientId}`, payload: Buffer.from(`for ${clientId}`), qos: 1, messageId: index + 1, retain: false, dup: false });
    await awaitPacket(publisher.received, 'puback', index + 1);
  }
  await publisher.close();

  // Once more across a crash: the sessions hold their subscriptions and the messages queued for them.
  gw.child.kill('SIGKILL');
  await gw.exited;
  running.delete(gw);
  gw = await start(args);
  for (const [clientId, hello] of Object.entries(SESSIONS)) {
    const again = await device(gw, { ...hello, clientId, clean: false });
    assert.equal(again.connack.sessionPresent, true, `${clientId}: its session, after the second crash`);
    await eventually(() =>
      assert.deepEqual(
        again.received.filter((p): p is mqttPacket.IPublishPacket => p.cmd === 'publish').map((p) => `${p.topic} ${p.payload.toString()}`),
        [`later/${clientId} for ${clientId}`],
      ),
    );
    await again.close();
  }
  gw.child.kill('SIGTERM');
  assert.equal(await gw.exited, 0);
  running.delete(gw);
});

test("a device's persistent session, its gateway killed as the device read the CONNACK, with and without a will: still the device's login's, not an anonymous client's", {
  timeout: 120_000,
}, async () => {
  const root = tempDir();
  const config = writeGatewayTree(root, '{allowAnonymous: true}', {
    'sensor.yaml': `name: sensor\nclientId: sensor-*\ncredentials:\n${await credential('sensor-1', 'secret-1')}${await credential('sensor-2', 'secret-2')}`,
  });
  const args = ['--config', config, '--data-dir', join(root, 'data')];
  const login = (n: 1 | 2) => ({ clientId: `sensor-${n}`, username: `sensor-${n}`, password: Buffer.from(`secret-${n}`) });
  const will = { topic: 'devices/sensor-2/status', payload: Buffer.from('offline'), qos: 1 as const, retain: false };
  let gw = await start(args);
  gw = await connectThenCrash(gw, args, login(1));
  gw = await connectThenCrash(gw, args, { ...login(2), will });

  const anonymous: Record<string, number | undefined> = {};
  for (const clientId of ['sensor-1', 'sensor-2']) {
    const intruder = await device(gw, { clientId });
    anonymous[clientId] = intruder.connack.returnCode;
    await intruder.close();
  }
  assert.deepEqual(anonymous, { 'sensor-1': 2, 'sensor-2': 2 }, "an anonymous client is refused the device's session (identifier rejected)");
  const one = await device(gw, login(1));
  assert.equal(one.connack.sessionPresent, true, 'sensor-1: its session');
  await one.close();
  const two = await device(gw, { ...login(2), will });
  assert.equal(two.connack.sessionPresent, true, 'sensor-2: its session');
  await two.close();
  gw.child.kill('SIGTERM');
  assert.equal(await gw.exited, 0);
  running.delete(gw);
});

/** A stored session (a subscription, a message queued), then a Clean Start, then a reconnection without one. */
const DISCARDS: Record<string, { readonly stored: Partial<mqttPacket.IConnectPacket>; readonly cleanStart: Partial<mqttPacket.IConnectPacket> }> = {
  'old-311': { stored: { protocolVersion: 4, clean: false }, cleanStart: { protocolVersion: 4, clean: true } },
  // Clean Start 1 with a Session Expiry Interval: a new persistent session, without the old one's state.
  'old-5': {
    stored: { protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 600 } },
    cleanStart: { protocolVersion: 5, clean: true, properties: { sessionExpiryInterval: 600 } },
  },
  'old-5-ephemeral': {
    stored: { protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 600 } },
    cleanStart: { protocolVersion: 5, clean: true, properties: { sessionExpiryInterval: 0 } },
  },
};

/** What broker.db holds for the client id: its record, subscriptions and queued copies. */
function onDisk(dbPath: string, clientId: string): { record: number; subscriptions: number; queued: number } {
  const db = new Database(dbPath, { readonly: true });
  try {
    const count = (table: string) => (db.prepare(`SELECT count(*) AS n FROM ${table} WHERE client_id = ?`).get(clientId) as { n: number }).n;
    return { record: count('sessions'), subscriptions: count('subscriptions'), queued: count('queue') };
  } finally {
    db.close();
  }
}

test('a Clean Start discarding a stored session, its gateway killed as its device read the CONNACK: the session stays discarded after the restart', {
  timeout: 120_000,
}, async () => {
  const root = tempDir();
  const config = writeGatewayTree(root, '{allowAnonymous: true}', {});
  const dataDir = join(root, 'data');
  const args = ['--config', config, '--data-dir', dataDir];
  let gw = await start(args);
  for (const [clientId, { stored }] of Object.entries(DISCARDS)) {
    const first = await device(gw, { ...stored, clientId });
    first.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: `stale/${clientId}`, qos: 1 }] });
    await awaitPacket(first.received, 'suback', 1);
    await first.close();
  }
  const publisher = await device(gw, { clientId: 'publisher', clean: true });
  for (const [index, clientId] of Object.keys(DISCARDS).entries()) {
    publisher.send({ cmd: 'publish', topic: `stale/${clientId}`, payload: Buffer.from('stale'), qos: 1, messageId: index + 1, retain: false, dup: false });
    await awaitPacket(publisher.received, 'puback', index + 1);
  }
  await publisher.close();

  const left: Record<string, ReturnType<typeof onDisk>> = {};
  for (const [clientId, { cleanStart }] of Object.entries(DISCARDS)) {
    const fresh = await device(gw, { ...cleanStart, clientId }, true);
    assert.equal(fresh.connack.sessionPresent, false, `${clientId}: Clean Start`);
    await gw.exited;
    running.delete(gw);
    await fresh.close();
    // On disk as the crash left it, before the next run reads it.
    left[clientId] = onDisk(join(dataDir, 'broker.db'), clientId);
    gw = await start(args);
  }
  assert.deepEqual(
    left,
    {
      'old-311': { record: 0, subscriptions: 0, queued: 0 },
      'old-5': { record: 1, subscriptions: 0, queued: 0 },
      'old-5-ephemeral': { record: 0, subscriptions: 0, queued: 0 },
    },
    'after the crash: no record of a discarded session (the new persistent one has its own), no subscription, no queued message',
  );

  const present: Record<string, boolean> = {};
  for (const [clientId, { stored }] of Object.entries(DISCARDS)) {
    const back = await device(gw, { ...stored, clientId });
    present[clientId] = back.connack.sessionPresent;
    await back.close();
  }
  // 'old-5' was told of its new session (its Session Expiry Interval); the others have none.
  assert.deepEqual(present, { 'old-311': false, 'old-5': true, 'old-5-ephemeral': false }, 'Session Present after the restart');
  gw.child.kill('SIGTERM');
  assert.equal(await gw.exited, 0);
  running.delete(gw);
});
