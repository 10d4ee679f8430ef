// A connection that closes while it connects, and the connection already holding its client id
// (real aedes, SQLite state, raw sockets and mqtt.js on loopback). A closed connection whose
// connect had changed the session stored under the id (a Clean Start discarded it, the will step
// removed the stored will) takes the id over, as any newer connection does: the holder must not
// go on with a session no longer there. One that only looked its session up leaves the holder
// alone. A takeover finishing while the id is held again (the connection taken over still closing,
// another takeover of the id finished first) leaves one connection registered, counted once. A
// closed connection that takes the id over has its delayed will published, and one registered and
// gone while another takeover of the id is under way leaves that one the session.
//
// A network cannot be made to close a connection at one exact step of the broker's connect, so
// the test closes it from there: the persistence's session lookup or will removal (wrappers around
// the real ones) destroys the socket first, and the takeover closes the connection taken over the
// way aedes does when its socket closes.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect as connectSocket } from 'node:net';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Aedes, Client } from 'aedes';
import { type IConnackPacket, type MqttClient, connect, connectAsync } from 'mqtt';
import { aedesInternals } from '../../src/mqtt/aedes-internals.ts';
import { eventually } from '../harness/eventually.ts';
import { connectPacket } from '../harness/mqtt-wire.ts';
import { stateBrokers } from '../harness/takeover-brokers.ts';

interface Persistence {
  cleanSubscriptions(client: Client): Promise<unknown>;
  subscriptionsByClient(client: { id: string }): Promise<{ topic: string }[]>;
  delWill(client: Client): Promise<unknown>;
}

const start = stateBrokers<Persistence>('ferry-closed-connect-takeover-');

/**
 * The persistence's `method`, at its first call for client id `clientId` from a connecting client
 * (`connecting`: the client as aedes started its connect), comes after that client's socket was
 * destroyed. The session lookup gets the client id alone.
 */
function closeAt(persistence: Persistence, method: 'cleanSubscriptions' | 'subscriptionsByClient' | 'delWill', clientId: string, connecting: () => Client | undefined): void {
  const real = (persistence[method] as (client: Client) => Promise<unknown>).bind(persistence);
  let closed = false;
  (persistence as unknown as Record<string, (client: Client) => Promise<unknown>>)[method] = async (client: Client) => {
    const closing = connecting();
    if (!closed && client.id === clientId && closing !== undefined && closing.id === clientId) {
      closed = true;
      closing.conn.destroy();
      await sleep(20);
    }
    return real(client);
  };
}

/** Opens a raw connection that sends a CONNECT (MQTT 3.1.1) and waits for it to close. */
async function connectAndLose(port: number, clientId: string, clean: boolean): Promise<void> {
  const socket = connectSocket(port, '127.0.0.1');
  socket.on('error', () => {});
  await once(socket, 'connect');
  socket.write(connectPacket(clientId, 60, clean));
  await once(socket, 'close');
}

/** Connects a persistent session (MQTT 3.1.1, no clean session) and returns its CONNACK's Session Present. */
async function resume(url: string, clientId: string): Promise<{ client: MqttClient; sessionPresent: boolean }> {
  const client = connect(url, { clientId, clean: false, reconnectPeriod: 0 });
  const connack = await new Promise<IConnackPacket>((resolve) => client.once('connect', resolve));
  return { client, sessionPresent: connack.sessionPresent };
}

const registered = (aedes: Aedes) => Object.keys(aedesInternals(aedes).clients);

test('a connection that closes after its Clean Start discarded the session takes over the connection holding its client id', { timeout: 60_000 }, async () => {
  const { broker, aedes, url, persistence, connecting } = await start();
  const holder = await connectAsync(url, { clientId: 'wiped-1', clean: false, reconnectPeriod: 0 });
  holder.on('error', () => {});
  await holder.subscribeAsync('wiped/t', { qos: 1 });
  closeAt(persistence, 'cleanSubscriptions', 'wiped-1', connecting);
  await connectAndLose(broker.port, 'wiped-1', true);
  // The holder's session is gone: it is disconnected, not left subscribed on a session no longer stored.
  await eventually(() => assert.equal(holder.connected, false, 'the holder went on with a discarded session'));
  await eventually(() => assert.equal(aedes.connectedClients, 0));
  assert.deepEqual(registered(aedes), []);
  assert.deepEqual(await persistence.subscriptionsByClient({ id: 'wiped-1' }), []);
  holder.end(true);
  // Told so as it comes back: Session Present 0, and it subscribes again.
  const again = await resume(url, 'wiped-1');
  assert.equal(again.sessionPresent, false);
  assert.equal(aedes.connectedClients, 1);
  await again.client.endAsync();
  await eventually(() => assert.equal(aedes.connectedClients, 0));
});

test('a connection that closes at its will step takes over the connection holding its client id, whose will is published', { timeout: 60_000 }, async () => {
  const { broker, aedes, url, persistence, connecting } = await start();
  const watcher = await connectAsync(url, { clientId: 'will-watcher', reconnectPeriod: 0 });
  const wills: string[] = [];
  watcher.on('message', (_topic, payload) => wills.push(payload.toString()));
  await watcher.subscribeAsync('will/t', { qos: 1 });
  const holder = await connectAsync(url, {
    clientId: 'will-1',
    clean: false,
    reconnectPeriod: 0,
    will: { topic: 'will/t', payload: Buffer.from('holder gone'), qos: 1, retain: false },
  });
  holder.on('error', () => {});
  // The will step removes the will stored under the id (the holder's) before the client closes.
  closeAt(persistence, 'delWill', 'will-1', connecting);
  await connectAndLose(broker.port, 'will-1', false);
  await eventually(() => assert.equal(holder.connected, false, 'the holder went on without its stored will'));
  await eventually(() => assert.deepEqual(wills, ['holder gone']));
  await eventually(() => assert.equal(aedes.connectedClients, 1));
  assert.deepEqual(registered(aedes), ['will-watcher']);
  holder.end(true);
  // Published once: a message sent after it comes right behind it.
  await watcher.publishAsync('will/t', 'marker', { qos: 1 });
  await eventually(() => assert.deepEqual(wills, ['holder gone', 'marker']));
  await watcher.endAsync();
  await eventually(() => assert.equal(aedes.connectedClients, 0));
});

test('a connection that closes while its session is resumed leaves the connection holding its client id and its session alone', { timeout: 60_000 }, async () => {
  const { broker, aedes, url, persistence, connecting } = await start();
  const holder = await connectAsync(url, { clientId: 'kept-1', clean: false, reconnectPeriod: 0 });
  await holder.subscribeAsync('kept/t', { qos: 1 });
  const held = aedesInternals(aedes).clients['kept-1'];
  closeAt(persistence, 'subscriptionsByClient', 'kept-1', connecting);
  await connectAndLose(broker.port, 'kept-1', false);
  await sleep(200);
  assert.equal(holder.connected, true);
  assert.equal(aedesInternals(aedes).clients['kept-1'], held);
  assert.equal(aedes.connectedClients, 1);
  assert.deepEqual(
    (await persistence.subscriptionsByClient({ id: 'kept-1' })).map((sub) => sub.topic),
    ['kept/t'],
  );
  await holder.endAsync();
  await eventually(() => assert.equal(aedes.connectedClients, 0));
  const again = await resume(url, 'kept-1');
  assert.equal(again.sessionPresent, true);
  await again.client.endAsync();
});

test('a takeover that finishes while the connection taken over is still closing unregisters that one first', { timeout: 60_000 }, async () => {
  const { aedes, url } = await start();
  const older = await connectAsync(url, { clientId: 'closing-1', reconnectPeriod: 0 });
  older.on('error', () => {});
  // A subscription to remove: the close of the connection taken over does not end at once.
  await older.subscribeAsync('closing/t', { qos: 1 });
  const taken = aedesInternals(aedes).clients['closing-1'] as Client;
  const events: string[] = [];
  aedes.on('client', (client) => events.push(`client ${client === taken ? 'older' : 'newer'}`));
  aedes.on('clientDisconnect', (client) => events.push(`clientDisconnect ${client === taken ? 'older' : 'newer'}`));
  const registering = aedes as unknown as { registerClient: (client: Client) => void };
  const registerClient = registering.registerClient.bind(aedes);
  registering.registerClient = (client) => {
    // The older connection's socket closes just as the newer one takes its client id over.
    if (client !== taken && client.id === 'closing-1') taken.close();
    registerClient(client);
  };
  const newer = await connectAsync(url, { clientId: 'closing-1', reconnectPeriod: 0 });
  await eventually(() => assert.deepEqual(events, ['clientDisconnect older', 'client newer']));
  assert.equal(aedes.connectedClients, 1);
  await newer.endAsync();
  await eventually(() => assert.equal(aedes.connectedClients, 0));
  assert.deepEqual(registered(aedes), []);
  assert.deepEqual(events, ['clientDisconnect older', 'client newer', 'clientDisconnect newer']);
});

test('two takeovers of one client id finishing together leave one connection registered', { timeout: 60_000 }, async () => {
  const { aedes, url } = await start();
  const older = await connectAsync(url, { clientId: 'twice-1', protocolVersion: 5, reconnectPeriod: 0 });
  older.on('error', () => {});
  const registering = aedes as unknown as { registerClient: (client: Client) => void };
  const registerClient = registering.registerClient.bind(aedes);
  const waiting: Client[] = [];
  registering.registerClient = (client) => {
    if (client.id !== 'twice-1' || waiting.length === 2) return registerClient(client);
    // Both newer connections take the id over from the older one in the same turn.
    waiting.push(client);
    if (waiting.length === 2) for (const each of waiting) registerClient(each);
  };
  const newer = [1, 2].map(() => connect(url, { clientId: 'twice-1', protocolVersion: 5, reconnectPeriod: 0 }));
  for (const client of newer) client.on('error', () => {});
  await eventually(() => assert.equal(waiting.length, 2));
  await eventually(() => assert.equal(older.connected, false));
  // One of the two stays, the other is taken over in turn.
  await eventually(() => assert.equal(newer.filter((client) => client.connected).length, 1));
  await sleep(200);
  assert.equal(newer.filter((client) => client.connected).length, 1);
  assert.equal(aedes.connectedClients, 1);
  const holder = aedesInternals(aedes).clients['twice-1'] as Client;
  assert.equal(holder.closed, false);
  older.end(true);
  for (const client of newer) client.end(true);
  await eventually(() => assert.equal(aedes.connectedClients, 0));
  assert.deepEqual(registered(aedes), []);
});

/** An MQTT 5 persistent session's connection whose will (to `topic`, `payload`) waits 1 s. */
function delayedWillOptions(clientId: string, topic: string, payload: string) {
  return {
    clientId,
    protocolVersion: 5 as const,
    clean: false,
    properties: { sessionExpiryInterval: 30 },
    reconnectPeriod: 0,
    will: { topic, payload: Buffer.from(payload), qos: 1 as const, retain: false, properties: { willDelayInterval: 1 } },
  };
}

/** A connection subscribed to `topic` and the payloads it got there. */
async function watch(url: string, topic: string): Promise<{ watcher: MqttClient; payloads: string[] }> {
  const watcher = await connectAsync(url, { clientId: `${topic}-watcher`, reconnectPeriod: 0 });
  const payloads: string[] = [];
  watcher.on('message', (_topic, payload) => payloads.push(payload.toString()));
  await watcher.subscribeAsync(topic, { qos: 1 });
  return { watcher, payloads };
}

/**
 * Connects a second connection of the holder's client id, with a will, and waits for the broker
 * to close it (at the step the test holds it): it must have taken the holder over, and, the id's
 * last connection gone without a DISCONNECT, its will comes once its delay is over (the holder's
 * does not: a connection to its session came within its delay); only the watcher stays.
 */
async function closedTakeover(aedes: Aedes, url: string, holder: MqttClient, watched: { watcher: MqttClient; payloads: string[] }, clientId: string, topic: string): Promise<void> {
  const closing = connect(url, delayedWillOptions(clientId, topic, 'second gone'));
  closing.on('error', () => {});
  await new Promise<void>((resolve) => closing.once('close', () => resolve()));
  closing.end(true);
  await eventually(() => assert.equal(holder.connected, false));
  await eventually(() => assert.deepEqual(watched.payloads, ['second gone']), { timeoutMs: 5_000 });
  await eventually(() => assert.equal(aedes.connectedClients, 1));
  assert.deepEqual(registered(aedes), [`${topic}-watcher`]);
  holder.end(true);
  await watched.watcher.endAsync();
}

test('a connection that closes at its will step and takes over the client id has its delayed will published', { timeout: 60_000 }, async () => {
  const { aedes, url, persistence, connecting } = await start();
  const watched = await watch(url, 'delayed-will');
  const holder = await connectAsync(url, delayedWillOptions('delayed-1', 'delayed-will', 'holder gone'));
  holder.on('error', () => {});
  closeAt(persistence, 'delWill', 'delayed-1', connecting);
  await closedTakeover(aedes, url, holder, watched, 'delayed-1', 'delayed-will');
});

test('a connection that closes while it takes the client id over has its delayed will published', { timeout: 60_000 }, async () => {
  const { aedes, url } = await start();
  const watched = await watch(url, 'taking-will');
  const holder = await connectAsync(url, delayedWillOptions('taking-1', 'taking-will', 'holder gone'));
  holder.on('error', () => {});
  // A subscription to remove: the close of the connection taken over does not end at once.
  await holder.subscribeAsync('taking/t', { qos: 1 });
  const taken = aedesInternals(aedes).clients['taking-1'] as Client;
  const registering = aedes as unknown as { registerClient: (client: Client) => void };
  const registerClient = registering.registerClient.bind(aedes);
  registering.registerClient = (client) => {
    registerClient(client);
    // The newer connection's socket closes while the older one is still being closed.
    if (client !== taken && client.id === 'taking-1') client.conn.destroy();
  };
  await closedTakeover(aedes, url, holder, watched, 'taking-1', 'taking-will');
});

test('a connection registered and gone while another takes its client id over leaves that one the session', { timeout: 60_000 }, async () => {
  const { aedes, url, persistence } = await start();
  const v5 = (sessionExpiryInterval: number) => ({ protocolVersion: 5 as const, clean: false, properties: { sessionExpiryInterval }, reconnectPeriod: 0 });
  const holder = await connectAsync(url, { clientId: 'race-1', ...v5(30) });
  holder.on('error', () => {});
  await holder.subscribeAsync('race/t', { qos: 1 });
  const taken = aedesInternals(aedes).clients['race-1'] as Client;
  // A resume whose session ends with its connection waits at its will step...
  let closing: Client | undefined;
  let release = () => {};
  const held = new Promise<void>((resolve) => {
    release = resolve;
  });
  const delWill = persistence.delWill.bind(persistence);
  persistence.delWill = async (client) => {
    if (client.id === 'race-1' && client !== taken && closing === undefined) {
      closing = client;
      await held;
    }
    return delWill(client);
  };
  const ended = connect(url, { clientId: 'race-1', ...v5(0) });
  ended.on('error', () => {});
  await eventually(() => assert.ok(closing !== undefined));
  // ...and closes as a third connection starts taking the id over: it takes the holder over
  // first, and is gone before the third one's takeover ends.
  const registering = aedes as unknown as { registerClient: (client: Client) => void };
  const registerClient = registering.registerClient.bind(aedes);
  registering.registerClient = (client) => {
    registerClient(client);
    if (client !== taken && client !== closing && closing !== undefined && !closing.closed) {
      closing.conn.destroy();
      setTimeout(release, 50);
    }
  };
  const last = connect(url, { clientId: 'race-1', ...v5(30) });
  last.on('error', () => {});
  const connack = await new Promise<IConnackPacket>((resolve) => last.once('connect', resolve));
  assert.equal(connack.sessionPresent, true);
  await eventually(() => assert.equal(aedes.connectedClients, 1));
  await sleep(200);
  assert.equal(last.connected, true);
  // The session it was told about is still stored: its subscription too.
  assert.deepEqual(
    (await persistence.subscriptionsByClient({ id: 'race-1' })).map((sub) => sub.topic),
    ['race/t'],
  );
  holder.end(true);
  ended.end(true);
  await last.endAsync();
  await eventually(() => assert.equal(aedes.connectedClients, 0));
});
