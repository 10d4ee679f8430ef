// Connections that close after their login succeeded, while the broker still looks their session
// up or takes their client id over from another connection: the embedded broker (real aedes,
// SQLite state, raw sockets and mqtt.js on loopback) must neither count them as connected nor keep
// them in memory, and must leave alone the connection that holds their client id while their
// connect only looked their session up (one that changed the session stored under the id takes it
// over: leak-closed-during-connect-takeover.test.ts).
//
// A network cannot be made to close a connection at one exact step of the broker's connect, so
// the test closes it from there: the persistence's session lookup (a wrapper around the real one)
// destroys the socket and waits a little before the lookup runs, and the takeover closes the
// connection the way aedes does when its socket closes.
import assert from 'node:assert/strict';
import { connect as connectSocket } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Aedes, Client } from 'aedes';
import { connectAsync } from 'mqtt';
import pino from 'pino';
import { aedesInternals } from '../../src/mqtt/aedes-internals.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { type FollowedBroker, alive, followedBrokers } from '../harness/connection-leaks.ts';
import { eventually } from '../harness/eventually.ts';
import { connectPacket, connectPacketV5 } from '../harness/mqtt-wire.ts';
import { tempDirs } from '../harness/temp.ts';

const N = 30;
const dirs = tempDirs('ferry-leak-closed-connect-');
const startFollowed = followedBrokers();

const start = (): Promise<FollowedBroker> =>
  startFollowed({
    host: '127.0.0.1',
    port: 0,
    logger: pino({ level: 'silent' }),
    counters: new CounterRegistry(),
    state: { path: join(dirs(), 'broker.db'), synchronous: 'normal' },
  });

/** The session lookup of the first connecting client with each id starting with `prefix` comes after its socket was destroyed. */
function closeDuringLookup(aedes: Aedes, prefix: string): void {
  const persistence = (aedes as unknown as { persistence: { cleanSubscriptions: (client: Client) => Promise<unknown> } }).persistence;
  const cleanSubscriptions = persistence.cleanSubscriptions.bind(persistence);
  const closed = new Set<string>();
  persistence.cleanSubscriptions = async (client: Client) => {
    if (client.id.startsWith(prefix) && !closed.has(client.id) && (client as Client).conn !== undefined) {
      closed.add(client.id);
      (client as Client).conn.destroy();
      await sleep(20);
    }
    return cleanSubscriptions(client);
  };
}

/** The lookup of the session to resume for client id `clientId` comes after the socket of the connection resuming it was destroyed. */
function closeDuringResume({ aedes, connections }: FollowedBroker, clientId: string): void {
  const persistence = (aedes as unknown as { persistence: { subscriptionsByClient: (client: { id: string }) => Promise<unknown> } }).persistence;
  const subscriptionsByClient = persistence.subscriptionsByClient.bind(persistence);
  let closed = false;
  persistence.subscriptionsByClient = async (client: { id: string }) => {
    const resuming = connections.at(-1)?.deref();
    if (!closed && client.id === clientId && resuming?.id === clientId) {
      closed = true;
      resuming.conn.destroy();
      await sleep(20);
    }
    return subscriptionsByClient(client);
  };
}

/** Opens a raw connection that sends a CONNECT (MQTT 3.1.1, clean session unless `clean` is false) and waits for it to close. */
async function connectAndLose(port: number, clientId: string, clean = true): Promise<void> {
  const socket = connectSocket(port, '127.0.0.1');
  socket.on('error', () => {});
  await new Promise((resolve) => socket.once('connect', resolve));
  socket.write(connectPacket(clientId, 60, clean));
  await new Promise((resolve) => socket.once('close', resolve));
}

const registered = (aedes: Aedes) => Object.keys(aedesInternals(aedes).clients);

test('connections that close while their session is looked up are not counted as connected nor kept in memory', { timeout: 60_000 }, async () => {
  const { broker, aedes, connections } = await start();
  closeDuringLookup(aedes, 'late-');
  for (let i = 0; i < N; i++) await connectAndLose(broker.port, `late-${i}`);
  await eventually(() => assert.equal(connections.length, N));
  await sleep(200);
  assert.deepEqual(registered(aedes), [], 'closed connections registered as connected');
  assert.equal(aedes.connectedClients, 0);
  assert.equal(await alive(connections), 0, 'connections closed during their session lookup still in memory');

  // Their client ids connect again, and are counted once.
  const again = await connectAsync(`mqtt://127.0.0.1:${broker.port}`, { clientId: 'late-0', reconnectPeriod: 0 });
  assert.equal(aedes.connectedClients, 1);
  await again.endAsync();
  await eventually(() => assert.equal(aedes.connectedClients, 0));
});

test('a connection that closes while its session is looked up leaves the connection holding its client id connected', { timeout: 60_000 }, async () => {
  const followed = await start();
  const { broker, aedes } = followed;
  const holder = await connectAsync(`mqtt://127.0.0.1:${broker.port}`, { clientId: 'held-1', reconnectPeriod: 0 });
  const held = aedesInternals(aedes).clients['held-1'];
  assert.ok(held !== undefined);
  // A resume: the lookup changes nothing stored (a Clean Start's discards the session).
  closeDuringResume(followed, 'held-1');
  await connectAndLose(broker.port, 'held-1', false);
  await sleep(200);
  assert.equal(aedesInternals(aedes).clients['held-1'], held, 'the connection holding the client id was unregistered');
  assert.equal(aedes.connectedClients, 1);
  // Still served: it gets its own message back.
  await holder.subscribeAsync('held/echo', { qos: 1 });
  const echoed = new Promise((resolve) => holder.once('message', resolve));
  await holder.publishAsync('held/echo', 'still here', { qos: 1 });
  await echoed;
  assert.equal(holder.connected, true);
  await holder.endAsync();
  await eventually(() => assert.equal(aedes.connectedClients, 0));
  assert.deepEqual(registered(aedes), []);
});

test('a connection that closes while it takes its client id over ends its session and is not kept', { timeout: 60_000 }, async () => {
  const { broker, aedes, connections } = await start();
  const registering = aedes as unknown as { registerClient: (client: Client) => void };
  const registerClient = registering.registerClient.bind(aedes);
  registering.registerClient = (client) => {
    registerClient(client);
    // The older connection is being taken over (told with a DISCONNECT): the newer one closes now.
    if (client.id !== 'taken-1' || !taking.has(client.id)) return;
    closedWhileTakingOver = true;
    client.close();
  };
  let closedWhileTakingOver = false;
  const taking = aedesInternals(aedes)._takingOver;
  const older = await connectAsync(`mqtt://127.0.0.1:${broker.port}`, { clientId: 'taken-1', protocolVersion: 5, reconnectPeriod: 0 });
  older.on('error', () => {});
  const newer = connectSocket(broker.port, '127.0.0.1');
  newer.on('error', () => {});
  await new Promise((resolve) => newer.once('connect', resolve));
  newer.write(connectPacketV5('taken-1'));
  await new Promise((resolve) => newer.once('close', resolve));
  await eventually(() => assert.equal(older.connected, false));
  await sleep(200);
  assert.equal(closedWhileTakingOver, true);
  assert.deepEqual(registered(aedes), [], 'a closed connection registered as connected');
  assert.equal(aedes.connectedClients, 0);
  older.end(true);
  assert.equal(connections.length, 2);
  assert.equal(await alive(connections), 0, 'connections of the takeover still in memory');
});
