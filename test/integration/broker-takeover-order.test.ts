// Connections of one client id whose takeovers overlap (real aedes, SQLite state, mqtt.js on
// loopback). The connection that looked the session up last is the newer one: an older one
// whose takeover ends after it (a connection taken over ends its close after a later takeover's
// began: the later one's finishes first) does not take it over, connected or already closed.
// A connection replaced while it was closing has its delayed will dropped, and a closed
// connection's delayed will, timed once it took its client id over, is on disk while it waits.
//
// Two connects of one id whose will steps are committed together (one commit for the writes of
// one event-loop turn) take the id over in the same turn; the test holds the first one's takeover
// until the second one's comes, and closes connections the way aedes does when a socket closes.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Aedes, Client } from 'aedes';
import { type IConnackPacket, type MqttClient, connect, connectAsync } from 'mqtt';
import { aedesInternals } from '../../src/mqtt/aedes-internals.ts';
import { eventually } from '../harness/eventually.ts';
import { committed } from '../harness/state-broker.ts';
import { stateBrokers } from '../harness/takeover-brokers.ts';

interface Persistence {
  subscriptionsByClient(client: { id: string }): Promise<{ topic: string }[]>;
  delWill(client: Client): Promise<unknown>;
}

const start = stateBrokers<Persistence>('ferry-takeover-order-');

const registered = (aedes: Aedes) => aedesInternals(aedes).clients;
const v5 = (clientId: string, sessionExpiryInterval: number) => ({
  clientId,
  protocolVersion: 5 as const,
  clean: false,
  properties: { sessionExpiryInterval },
  reconnectPeriod: 0,
});

/** An MQTT 5 persistent session's connection whose will (to `topic`, `payload`) waits `delay` s. */
function delayedWillOptions(clientId: string, topic: string, payload: string, delay = 1) {
  return {
    ...v5(clientId, 30),
    will: { topic, payload: Buffer.from(payload), qos: 1 as const, retain: false, properties: { willDelayInterval: delay } },
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
 * Holds the takeover of `clientId` by the first connection to take it over from `holder` until a
 * second one takes it over too, then starts both in the same turn, the first one first; `between`
 * runs right after (given the two connections).
 */
function takeoversTogether(aedes: Aedes, clientId: string, holder: Client, between: (first: Client, second: Client) => void = () => {}): Client[] {
  const registering = aedes as unknown as { registerClient: (client: Client) => void };
  const registerClient = registering.registerClient.bind(aedes);
  const waiting: Client[] = [];
  registering.registerClient = (client) => {
    if (client.id !== clientId || client === holder || waiting.includes(client) || waiting.length === 2) return registerClient(client);
    waiting.push(client);
    if (waiting.length < 2) return;
    const [first, second] = waiting as [Client, Client];
    registerClient(first);
    registerClient(second);
    between(first, second);
  };
  return waiting;
}

/** Connects `options` and resolves at its CONNACK, with the reason codes of the DISCONNECTs it gets. */
async function connectWatched(url: string, options: Parameters<typeof connect>[1]): Promise<{ client: MqttClient; connack: IConnackPacket; disconnects: number[] }> {
  const client = connect(url, options);
  client.on('error', () => {});
  const disconnects: number[] = [];
  client.on('disconnect', (packet) => disconnects.push(packet.reasonCode ?? 0));
  const connack = await new Promise<IConnackPacket>((resolve) => client.once('connect', resolve));
  return { client, connack, disconnects };
}

test('a connection replaced while it was closing has its delayed will dropped: a newer connection came to its session within the delay', { timeout: 60_000 }, async () => {
  const { aedes, url } = await start();
  const watched = await watch(url, 'replaced-will');
  const older = await connectAsync(url, delayedWillOptions('replaced-1', 'replaced-will', 'older gone'));
  older.on('error', () => {});
  // A subscription to remove: the close of the older connection does not end at once.
  await older.subscribeAsync('replaced/t', { qos: 1 });
  const taken = registered(aedes)['replaced-1'] as Client;
  const registering = aedes as unknown as { registerClient: (client: Client) => void };
  const registerClient = registering.registerClient.bind(aedes);
  registering.registerClient = (client) => {
    // The older connection's socket closes just as the newer one takes its client id over.
    if (client !== taken && client.id === 'replaced-1') taken.close();
    registerClient(client);
  };
  const newer = await connectAsync(url, v5('replaced-1', 30));
  await eventually(() => assert.notEqual(registered(aedes)['replaced-1'], taken));
  // It leaves with a DISCONNECT within the older one's will delay: the session goes on, no will.
  await newer.endAsync();
  await sleep(1_800);
  assert.deepEqual(watched.payloads, [], 'the will of the connection replaced was published');
  await watched.watcher.endAsync();
  older.end(true);
});

test('of two connections taking a client id over in the same turn, the one that came second stays', { timeout: 60_000 }, async () => {
  const { aedes, url } = await start();
  const holder = await connectAsync(url, v5('order-1', 30));
  holder.on('error', () => {});
  // A subscription to remove: the close of the connection taken over does not end at once.
  await holder.subscribeAsync('order/t', { qos: 1 });
  const waiting = takeoversTogether(aedes, 'order-1', registered(aedes)['order-1'] as Client);
  const first = await connectWatched(url, v5('order-1', 30));
  await eventually(() => assert.equal(waiting.length, 1));
  // The second connection looks the session up after the first one's connect is done with it.
  const second = await connectWatched(url, v5('order-1', 30));
  await eventually(() => assert.equal(holder.connected, false));
  await eventually(() => assert.equal(first.client.connected, false, 'the older connection stayed'));
  assert.deepEqual(first.disconnects, [0x8e]);
  await sleep(200);
  assert.equal(second.client.connected, true);
  assert.deepEqual(second.disconnects, []);
  assert.equal(registered(aedes)['order-1'], waiting[1]);
  assert.equal(aedes.connectedClients, 1);
  holder.end(true);
  first.client.end(true);
  await second.client.endAsync();
  await eventually(() => assert.equal(aedes.connectedClients, 0));
});

test('a connection closed while it takes its client id over does not take over the newer connection that came meanwhile, nor end its session', { timeout: 60_000 }, async () => {
  const { aedes, url, persistence } = await start();
  const holder = await connectAsync(url, v5('closed-order-1', 30));
  holder.on('error', () => {});
  await holder.subscribeAsync('closed-order/t', { qos: 1 });
  const waiting = takeoversTogether(aedes, 'closed-order-1', registered(aedes)['closed-order-1'] as Client, (first) => first.close());
  // The first one resumes the session with an expiry of 0: the session would end with it.
  const first = await connectWatched(url, v5('closed-order-1', 0));
  await eventually(() => assert.equal(waiting.length, 1));
  const second = await connectWatched(url, v5('closed-order-1', 30));
  assert.equal(second.connack.sessionPresent, true);
  await eventually(() => assert.equal(holder.connected, false));
  await eventually(() => assert.equal(first.client.connected, false));
  await sleep(200);
  assert.equal(second.client.connected, true, 'the newer connection was taken over by a closed one');
  assert.deepEqual(second.disconnects, []);
  assert.equal(registered(aedes)['closed-order-1'], waiting[1]);
  assert.equal(aedes.connectedClients, 1);
  // Its session is stored: the holder's subscription, and the one it makes now.
  await second.client.subscribeAsync('closed-order/u', { qos: 1 });
  assert.deepEqual((await persistence.subscriptionsByClient({ id: 'closed-order-1' })).map((sub) => sub.topic).sort(), ['closed-order/t', 'closed-order/u']);
  holder.end(true);
  await second.client.endAsync();
  await eventually(() => assert.equal(aedes.connectedClients, 0));
});

test('a connection closed at its will step that takes its client id over has its delayed will on disk: published after a restart within the delay', {
  timeout: 60_000,
}, async () => {
  const { aedes, url, path, persistence, connecting, close } = await start();
  const holder = await connectAsync(url, delayedWillOptions('stored-1', 'stored-will', 'holder gone', 2));
  holder.on('error', () => {});
  // The connection closes while its will step removes the will stored under the id (the holder's).
  const delWill = persistence.delWill.bind(persistence);
  let closed = false;
  persistence.delWill = (client) => {
    const removed = delWill(client);
    const closing = connecting();
    if (!closed && client.id === 'stored-1' && closing !== undefined && closing === client && closing !== registered(aedes)['stored-1']) {
      closed = true;
      closing.conn.destroy();
    }
    return removed;
  };
  const second = connect(url, delayedWillOptions('stored-1', 'stored-will', 'second gone', 2));
  second.on('error', () => {});
  await new Promise<void>((resolve) => second.once('close', () => resolve()));
  second.end(true);
  await eventually(() => assert.equal(holder.connected, false));
  await eventually(() => assert.equal(aedes.connectedClients, 0));
  // Its will waits its 2 s, on disk.
  await eventually(() => assert.deepEqual(committed(path, 'SELECT client_id FROM wills'), [{ client_id: 'stored-1' }]));
  holder.end(true);
  await close();

  const restarted = await start(path);
  const watcher = await connectAsync(restarted.url, { clientId: 'stored-watcher', reconnectPeriod: 0 });
  const payloads: string[] = [];
  watcher.on('message', (_topic, payload) => payloads.push(payload.toString()));
  await watcher.subscribeAsync('stored-will', { qos: 1 });
  await eventually(() => assert.deepEqual(payloads, ['second gone']), { timeoutMs: 5_000 });
  await sleep(300);
  assert.deepEqual(payloads, ['second gone']);
  await watcher.endAsync();
});
