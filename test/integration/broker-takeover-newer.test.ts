// Connections of one client id whose connects overlap (real aedes, SQLite state, mqtt.js on
// loopback): the newer one, whose connect looked the session up later, keeps the id,
// whatever the order the connects end in. An older one registering after it took the id, or
// whose takeover of the id ends after it (closed meanwhile, or gone), yields to it: it is not
// registered and it is told 0x8E once connected. The will stored under the id is the newer
// one's, whichever will step came last; the older one's will step does not store its will over
// the newer one's removal.
//
// Two connects of one id arriving in one event-loop turn look the session up and reach their will
// steps in that turn, and a will step with a will ends a commit after one without (the will's
// removal, then its storage): the older one's registration can come after the newer one took the
// id. The test holds the real persistence's answer, or the broker's registration, of one
// connection until the other's step, for the order needed.
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

const start = stateBrokers<Persistence>('ferry-takeover-newer-');

const registered = (aedes: Aedes) => aedesInternals(aedes).clients;
const storedWills = (path: string) => (committed(path, 'SELECT payload FROM wills') as { payload: Buffer }[]).map((row) => Buffer.from(row.payload).toString());
const storedTopics = async (persistence: Persistence, clientId: string) => (await persistence.subscriptionsByClient({ id: clientId })).map((sub) => sub.topic).sort();
const memoryTopics = (client: Client | undefined) => Object.keys((client as unknown as { subscriptions: object } | undefined)?.subscriptions ?? {}).sort();

/** An MQTT 5 persistent session's options; `willPayload`: a will to `topic`, waiting `delay` s. */
function v5(clientId: string, options: { clean?: boolean; willPayload?: string; topic?: string; delay?: number } = {}) {
  const { clean = false, willPayload, topic = 'newer-will', delay = 1 } = options;
  const will = willPayload === undefined ? {} : { will: { topic, payload: Buffer.from(willPayload), qos: 1 as const, retain: false, properties: { willDelayInterval: delay } } };
  return { clientId, protocolVersion: 5 as const, clean, properties: { sessionExpiryInterval: 30 }, reconnectPeriod: 0, ...will };
}

/** Connects `options`: its CONNACK once it comes, and the reason codes of the DISCONNECTs it gets. */
function watched(url: string, options: Parameters<typeof connect>[1]) {
  const client = connect(url, options);
  client.on('error', () => {});
  const disconnects: number[] = [];
  client.on('disconnect', (packet) => disconnects.push(packet.reasonCode ?? 0));
  const connack = new Promise<IConnackPacket>((resolve) => client.once('connect', resolve));
  return { client, connack, disconnects };
}

/** A connection subscribed to `topic` and the payloads it got there. */
async function watch(url: string, topic: string): Promise<{ watcher: MqttClient; payloads: string[] }> {
  const watcher = await connectAsync(url, { clientId: `${topic}-watcher`, reconnectPeriod: 0 });
  const payloads: string[] = [];
  watcher.on('message', (_topic, payload) => payloads.push(payload.toString()));
  await watcher.subscribeAsync(topic, { qos: 1 });
  return { watcher, payloads };
}

test('an older connection whose takeover of the id begins after the newer one registered yields to it', { timeout: 60_000 }, async () => {
  const { aedes, url, persistence } = await start();
  // A stored session with a subscription.
  const earlier = await connectAsync(url, v5('newer-late'));
  await earlier.subscribeAsync('newer-late/t', { qos: 1 });
  await earlier.endAsync();
  await eventually(() => assert.equal(aedes.connectedClients, 0));
  // The older connection resumes it (its subscription restored) and has a will; its will step
  // ends after the newer connection, which starts clean, registered.
  const registering = aedes as unknown as { registerClient: (client: Client) => void };
  const registerClient = registering.registerClient.bind(aedes);
  let older: Client | undefined;
  registering.registerClient = (client) => {
    if (client.id === 'newer-late' && older === undefined) older = client;
    else registerClient(client);
  };
  const first = watched(url, v5('newer-late', { willPayload: 'older gone' }));
  await eventually(() => assert.notEqual(older, undefined));
  const second = watched(url, v5('newer-late', { clean: true }));
  assert.equal((await second.connack).sessionPresent, false);
  registerClient(older as Client);
  await eventually(() => assert.equal(older?.closed, true));
  await sleep(300);
  assert.equal(second.client.connected, true, 'the older connection took the id over from the newer one');
  assert.deepEqual(second.disconnects, []);
  assert.equal(registered(aedes)['newer-late'] === older, false);
  assert.equal(aedes.connectedClients, 1);
  // The session is the newer one's Clean Start: no subscription, stored or in memory.
  assert.deepEqual(await storedTopics(persistence, 'newer-late'), []);
  assert.deepEqual(memoryTopics(registered(aedes)['newer-late']), []);
  await second.client.endAsync();
  first.client.end(true);
});

for (const closing of ['before it registered', 'once it registered'] as const) {
  test(`a newer connection closed ${closing}, while an older one's takeover of the id waited, keeps the session: the older one yields`, { timeout: 60_000 }, async () => {
    const { aedes, url, path, persistence } = await start();
    const topic = closing === 'before it registered' ? 'newer-closed-before' : 'newer-closed-once';
    const watched0 = await watch(url, topic);
    const holder = await connectAsync(url, v5('newer-closed'));
    holder.on('error', () => {});
    // A subscription to remove: the close of the connection taken over does not end at once.
    await holder.subscribeAsync('newer-closed/t', { qos: 1 });
    const taken = registered(aedes)['newer-closed'] as Client;
    // Both takeovers begin together, the older one's first; the newer connection closes then.
    const registering = aedes as unknown as { registerClient: (client: Client) => void };
    const registerClient = registering.registerClient.bind(aedes);
    const waiting: Client[] = [];
    registering.registerClient = (client) => {
      if (client.id !== 'newer-closed' || client === taken || waiting.includes(client) || waiting.length === 2) return registerClient(client);
      waiting.push(client);
      if (waiting.length < 2) return;
      const [first, second] = waiting as [Client, Client];
      registerClient(first);
      registerClient(second);
      if (closing === 'before it registered') second.close();
      else aedes.on('client', (c) => c === second && second.close());
    };
    const older = watched(url, v5('newer-closed', { willPayload: 'older gone', topic }));
    await older.connack;
    await eventually(() => assert.equal(waiting.length, 1));
    // The newer one starts clean: the subscription restored by the older one is gone.
    const newer = connect(url, v5('newer-closed', { clean: true, willPayload: 'newer gone', topic }));
    newer.on('error', () => {});
    await eventually(() => assert.equal(older.client.connected, false, 'the older connection stayed on a session its client no longer has'));
    assert.deepEqual(older.disconnects, [0x8e]);
    // (the watcher)
    await eventually(() => assert.equal(aedes.connectedClients, 1));
    assert.equal(registered(aedes)['newer-closed'], undefined);
    assert.deepEqual(await storedTopics(persistence, 'newer-closed'), []);
    // The newer one's will comes after its delay; the older one's never (taken over within its delay).
    await eventually(() => assert.deepEqual(watched0.payloads, ['newer gone']), { timeoutMs: 5_000 });
    await sleep(1_500);
    assert.deepEqual(watched0.payloads, ['newer gone']);
    await eventually(() => assert.deepEqual(storedWills(path), []));
    await watched0.watcher.endAsync();
    holder.end(true);
    newer.end(true);
    older.client.end(true);
  });
}

test("an older connect's will step does not store its will over a newer connect's removal of it", { timeout: 60_000 }, async () => {
  const { aedes, url, path, persistence } = await start();
  const watched0 = await watch(url, 'newer-removed-will');
  const delWill = persistence.delWill.bind(persistence);
  let older: Client | undefined;
  let release: (() => void) | undefined;
  persistence.delWill = (client) => {
    const removed = delWill(client);
    if (client.id !== 'newer-removed') return removed;
    // The older connect's removal is answered only once the newer connect removed the will too.
    if (older === undefined) {
      older = client;
      return new Promise((resolve) => {
        release = () => resolve(removed);
      });
    }
    if (client !== older && release !== undefined) setImmediate(release);
    return removed;
  };
  const first = watched(url, v5('newer-removed', { willPayload: 'older gone', topic: 'newer-removed-will' }));
  await eventually(() => assert.notEqual(older, undefined));
  // The newer connect has no will: the will stored under the id is none.
  const second = watched(url, v5('newer-removed'));
  await second.connack;
  // The older one yields: closed, never registered.
  await eventually(() => assert.equal(older?.closed, true));
  await sleep(300);
  assert.equal(second.client.connected, true);
  assert.deepEqual(storedWills(path), [], "the older connection's will was stored after the newer one's will step");
  // The newer one leaves with a DISCONNECT: no will of the session is ever to be published.
  await second.client.endAsync();
  // (the watcher)
  await eventually(() => assert.equal(aedes.connectedClients, 1));
  await sleep(1_500);
  assert.deepEqual(storedWills(path), []);
  assert.deepEqual(watched0.payloads, []);
  await watched0.watcher.endAsync();
  first.client.end(true);
});

test("the newer connection keeps its will stored when an older connect's will step came after its own", { timeout: 60_000 }, async () => {
  const { aedes, url, path, persistence, connects } = await start();
  const watched0 = await watch(url, 'newer-last-will');
  const subscriptionsByClient = persistence.subscriptionsByClient.bind(persistence);
  let release: (() => void) | undefined;
  persistence.subscriptionsByClient = (client) => {
    const subs = subscriptionsByClient(client);
    // The older connect's lookup is answered once the newer connection is connected.
    if (client.id !== 'newer-last' || release !== undefined) return subs;
    return new Promise((resolve) => {
      release = () => resolve(subs);
    });
  };
  const first = watched(url, v5('newer-last', { willPayload: 'older gone', topic: 'newer-last-will' }));
  await eventually(() => assert.notEqual(release, undefined));
  const older = connects.at(-1) as Client;
  const second = watched(url, v5('newer-last', { willPayload: 'newer gone', topic: 'newer-last-will' }));
  await second.connack;
  assert.deepEqual(storedWills(path), ['newer gone']);
  // The older connect goes on: its will step replaces the will stored, then it yields.
  release?.();
  await eventually(() => assert.equal(older.closed || registered(aedes)['newer-last'] === older, true));
  await sleep(300);
  assert.equal(second.client.connected, true, 'the older connection took over the newer one');
  assert.deepEqual(second.disconnects, []);
  await eventually(() => assert.deepEqual(storedWills(path), ['newer gone']));
  await second.client.endAsync();
  // (the watcher)
  await eventually(() => assert.equal(aedes.connectedClients, 1));
  await sleep(1_500);
  assert.deepEqual(storedWills(path), []);
  assert.deepEqual(watched0.payloads, []);
  await watched0.watcher.endAsync();
  first.client.end(true);
});

test("the older connection keeping the id stores its will when the newer one's will step came after its own and it closed before either registered", {
  timeout: 60_000,
}, async () => {
  const { aedes, url, path } = await start();
  const registering = aedes as unknown as { registerClient: (client: Client) => void };
  const registerClient = registering.registerClient.bind(aedes);
  let older: Client | undefined;
  let newer: Client | undefined;
  registering.registerClient = (client) => {
    if (client.id !== 'newer-gone') return registerClient(client);
    // The older connect's registration waits; the newer one closes at its registration, its will
    // step done (its delayed will stored as its delay starts, the id held by none).
    if (older === undefined) {
      older = client;
      return;
    }
    newer = client;
    client.close();
  };
  const first = watched(url, v5('newer-gone', { clean: true, willPayload: 'older gone', topic: 'newer-gone-will', delay: 30 }));
  await eventually(() => assert.notEqual(older, undefined));
  const second = watched(url, v5('newer-gone', { clean: true, willPayload: 'newer gone', topic: 'newer-gone-will', delay: 30 }));
  await eventually(() => assert.equal(newer?.closed, true));
  await eventually(() => assert.deepEqual(storedWills(path), ['newer gone']));
  // The older connection keeps the id: it came to the session within the newer one's delay, whose
  // will is not to be published; its own is the one on disk (published after a crash).
  registerClient(older as Client);
  await first.connack;
  await sleep(300);
  assert.equal(registered(aedes)['newer-gone'], older);
  await eventually(() => assert.deepEqual(storedWills(path), ['older gone'], "the will stored is the newer connection's, gone, not the holder's"));
  await first.client.endAsync();
  await eventually(() => assert.deepEqual(storedWills(path), []));
  second.client.end(true);
});

test('a holder whose close is still under way as a takeover ends has no delayed will published after the newer connection left', { timeout: 60_000 }, async () => {
  const { aedes, url, path } = await start();
  const watched0 = await watch(url, 'closing-holder-will');
  const holder = watched(url, v5('closing-holder', { willPayload: 'holder gone', topic: 'closing-holder-will' }));
  await holder.connack;
  await holder.client.subscribeAsync('closing-holder/t', { qos: 1 });
  const taken = registered(aedes)['closing-holder'] as Client;
  // The holder's network connection drops; its close's removal of its subscription is answered
  // once a newer connection took the id over and left with a DISCONNECT.
  const broker = aedes as unknown as { unsubscribe: (topic: string, func: unknown, done: () => void) => void };
  const unsubscribe = broker.unsubscribe.bind(aedes);
  let release: (() => void) | undefined;
  broker.unsubscribe = (topic, func, done) => {
    if (!taken.closed || topic !== 'closing-holder/t' || release !== undefined) return unsubscribe(topic, func, done);
    release = () => unsubscribe(topic, func, done);
  };
  holder.client.stream.destroy();
  await eventually(() => assert.notEqual(release, undefined));
  const newer = await connectAsync(url, v5('closing-holder'));
  assert.notEqual(registered(aedes)['closing-holder'], taken);
  await newer.endAsync();
  await eventually(() => assert.equal(registered(aedes)['closing-holder'], undefined));
  release?.();
  await eventually(() => assert.equal(aedes.connectedClients, 1)); // (the watcher)
  // A connection came to the session within the holder's delay: its will is never published.
  await sleep(2_000);
  assert.deepEqual(watched0.payloads, [], 'the will of the connection taken over was published after the newer one left');
  assert.deepEqual(storedWills(path), []);
  await watched0.watcher.endAsync();
  holder.client.end(true);
});

test('a connection taken over as its CONNACK is written, before the write calls back, is told 0x8E', { timeout: 60_000 }, async () => {
  const { aedes, url, persistence, connects } = await start();
  // The older connection starts clean: its CONNACK waits for the persistence's cleanIncoming.
  const store = persistence as unknown as { cleanIncoming: (client: Client) => Promise<unknown> };
  const cleanIncoming = store.cleanIncoming.bind(persistence);
  let answer: (() => void) | undefined;
  store.cleanIncoming = (client) => {
    const cleaned = cleanIncoming(client);
    if (client.id !== 'connack-written' || answer !== undefined) return cleaned;
    return new Promise((resolve) => {
      answer = () => resolve(cleaned);
    });
  };
  const registering = aedes as unknown as { registerClient: (client: Client) => void };
  const registerClient = registering.registerClient.bind(aedes);
  let newer: Client | undefined;
  registering.registerClient = (client) => {
    if (client.id !== 'connack-written' || answer === undefined || newer !== undefined) return registerClient(client);
    newer = client;
  };
  const first = watched(url, v5('connack-written', { clean: true }));
  await eventually(() => assert.notEqual(answer, undefined));
  const older = connects.at(-1) as Client;
  const second = watched(url, v5('connack-written'));
  await eventually(() => assert.notEqual(newer, undefined));
  // The newer connection's takeover runs once the older one's CONNACK is on its socket, before
  // the write's callback (a setImmediate later).
  const conn = older.conn as unknown as { write: (chunk: unknown, ...rest: unknown[]) => boolean };
  const write = conn.write;
  conn.write = function (this: unknown, chunk, ...rest) {
    const written = write.call(this, chunk, ...rest);
    if (Buffer.isBuffer(chunk) && chunk[0] === 0x20) {
      conn.write = write;
      // (after the socket is uncorked: mqtt-packet's writeToStream corks it until a nextTick)
      process.nextTick(() => registerClient(newer as Client));
    }
    return written;
  };
  answer?.();
  await first.connack;
  await eventually(() => assert.equal(older.closed, true));
  await eventually(() => assert.deepEqual(first.disconnects, [0x8e], 'the connection taken over after its CONNACK was closed without a DISCONNECT'));
  assert.equal(registered(aedes)['connack-written'], newer);
  await second.connack;
  await second.client.endAsync();
  first.client.end(true);
});

test('a holder taken over twice before its close is sent one DISCONNECT', { timeout: 60_000 }, async () => {
  const { aedes, url } = await start();
  const holder = watched(url, v5('twice-taken'));
  await holder.connack;
  // Two newer connections' takeovers begin in one turn.
  const registering = aedes as unknown as { registerClient: (client: Client) => void };
  const registerClient = registering.registerClient.bind(aedes);
  const waiting: Client[] = [];
  registering.registerClient = (client) => {
    if (client.id !== 'twice-taken' || waiting.length === 2) return registerClient(client);
    waiting.push(client);
    if (waiting.length === 2) for (const each of waiting) registerClient(each);
  };
  const first = watched(url, v5('twice-taken'));
  await eventually(() => assert.equal(waiting.length, 1));
  const second = watched(url, v5('twice-taken'));
  await eventually(() => assert.equal(holder.client.connected, false));
  await sleep(300);
  assert.deepEqual(holder.disconnects, [0x8e], 'the connection taken over got packets after its DISCONNECT');
  assert.deepEqual(first.disconnects, [0x8e]);
  assert.equal(registered(aedes)['twice-taken'], waiting[1]);
  assert.equal(aedes.connectedClients, 1);
  await second.client.endAsync();
  first.client.end(true);
  holder.client.end(true);
});
