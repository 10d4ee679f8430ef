// A SUBSCRIBE on a connection that a newer connection with the same client id is taking over,
// handled after the newer one logged in. aedes looks the session up right after the login and
// takes the old connection over only once the newer one's session writes are committed, some
// turns later; meanwhile it still handles the old connection's packets. Its SUBSCRIBE then
// used to be saved into the session the new connection had restored already: under Clean
// Start 0 a subscription of the session that the new connection did not have (its messages
// were queued and not sent, until the connection after), under Clean Start 1 a subscription of
// the discarded session kept in the new one (told Session Present 0). It is now refused.
//
// Real embedded broker on SQLite, devices on raw sockets. The authenticator is the real one;
// the subclass only tells the test when the newer connection's login succeeded, so that the
// old connection's SUBSCRIBE is written then: a packet of a device's old connection arriving
// while its new CONNECT is handled.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { type Socket, connect } from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { Aedes, Client } from 'aedes';
import mqttPacket from 'mqtt-packet';
import { aedesInternals } from '../../src/mqtt/aedes-internals.ts';
import { type AuthResult, DeviceAuthenticator } from '../../src/mqtt/auth.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { type AedesInstances, recordAedesInstances } from '../harness/aedes-instances.ts';
import { committed, stateBrokers, until } from '../harness/state-broker.ts';
import { tempDirs } from '../harness/temp.ts';

const dirs = tempDirs('ferry-takeover-subscribe-');
const { start, connectClient } = stateBrokers();
const sockets = new Set<Socket>();
let instances: AedesInstances;
before(async () => {
  instances = await recordAedesInstances();
});
after(() => {
  for (const socket of sockets) socket.destroy();
  instances.restore();
});

/** Anonymous devices may do anything; `onLogin` is called as a login succeeds, before the broker goes on with it. */
class ObservedAuthenticator extends DeviceAuthenticator {
  onLogin: ((clientId: string) => void) | undefined;

  constructor() {
    super({
      profiles: [],
      allowAnonymous: true,
      anonymousAcl: { publish: ['#'], subscribe: ['#'] },
      maxConnectionsPerAddress: 100,
      maxAuthFailures: 10,
      counters: new CounterRegistry(),
    });
  }

  override async authenticate(clientId: string, username: string | undefined, password: Buffer | undefined, address: string): Promise<AuthResult> {
    const result = await super.authenticate(clientId, username, password, address);
    if (result.ok) this.onLogin?.(clientId);
    return result;
  }
}

interface RawDevice {
  readonly got: mqttPacket.Packet[];
  send(packet: mqttPacket.Packet): void;
  /** The broker closed the connection. */
  closed(): boolean;
}

async function rawDevice(port: number, version: 4 | 5): Promise<RawDevice> {
  const socket = connect(port, '127.0.0.1');
  sockets.add(socket);
  socket.on('error', () => {});
  await once(socket, 'connect');
  const got: mqttPacket.Packet[] = [];
  const parser = mqttPacket.parser({ protocolVersion: version });
  parser.on('packet', (p: mqttPacket.Packet) => got.push(p));
  socket.on('data', (chunk: Buffer) => parser.parse(chunk));
  let ended = false;
  socket.on('close', () => {
    ended = true;
  });
  return { got, send: (packet) => socket.write(mqttPacket.generate(packet, { protocolVersion: version })), closed: () => ended };
}

const connackOf = (device: RawDevice) => device.got.find((p): p is mqttPacket.IConnackPacket => p.cmd === 'connack');

/** A broker and a device `dev` connected with a persistent session subscribed to `kept/#`, and a CONNECT taking it over. */
async function subscribedDevice(version: 4 | 5) {
  const path = join(dirs(), 'broker.db');
  const auth = new ObservedAuthenticator();
  const gateway = await start(path, { auth });
  const expiry = version === 5 ? { properties: { sessionExpiryInterval: 3600 } } : {};
  const connectPacket = (clean: boolean) => ({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: version, clientId: 'dev', keepalive: 60, clean, ...expiry }) as const;
  const old = await rawDevice(gateway.broker.port, version);
  old.send(connectPacket(false));
  await until(() => connackOf(old) !== undefined, 'the first connection accepted');
  old.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'kept/#', qos: 1 }] });
  await until(() => old.got.some((p) => p.cmd === 'suback'), 'its SUBACK');
  return { path, auth, gateway, old, connectPacket };
}

/**
 * `late` is written on the old connection a turn after the new connection's login succeeded:
 * under Clean Start the new connection's discard of the session is written by then (a packet
 * handled before it was discarded with the session, as it should be). Resolves with the new
 * connection at its CONNACK.
 */
async function takeOver(device: Awaited<ReturnType<typeof subscribedDevice>>, version: 4 | 5, cleanStart: boolean, late: mqttPacket.Packet) {
  let written = false;
  device.auth.onLogin = (clientId) => {
    if (clientId !== 'dev') return;
    device.auth.onLogin = undefined;
    setImmediate(() => {
      device.old.send(late);
      written = true;
    });
  };
  const taking = await rawDevice(device.gateway.broker.port, version);
  taking.send(device.connectPacket(cleanStart));
  await until(() => connackOf(taking) !== undefined, 'the new connection accepted');
  assert.ok(written, `the old connection's ${late.cmd.toUpperCase()} was written after the new connection's login`);
  return taking;
}

const subscriptionsOf = (path: string) => committed(path, "SELECT topic FROM subscriptions WHERE client_id = 'dev' ORDER BY topic");

const cases = [
  { name: 'MQTT 3.1.1, Clean Session 0: the subscription is not saved into the session the new connection resumed', version: 4, cleanStart: false, present: true },
  { name: 'MQTT 5, Clean Start 1: the subscription of the discarded session is not kept in the new one', version: 5, cleanStart: true, present: false },
] as const;

for (const { name, version, cleanStart, present } of cases) {
  test(`a SUBSCRIBE of a connection being taken over, handled after the new connection's login. ${name}`, async () => {
    const device = await subscribedDevice(version);
    const { path, gateway } = device;
    const taking = await takeOver(device, version, cleanStart, { cmd: 'subscribe', messageId: 2, subscriptions: [{ topic: 'late/#', qos: 1 }] });
    assert.equal(connackOf(taking)?.sessionPresent, present);
    assert.deepEqual(subscriptionsOf(path), cleanStart ? [] : [{ topic: 'kept/#' }], "the session's subscriptions in broker.db");
    // The broker handled it (refused) before the takeover closed the old connection.
    assert.equal(gateway.counters.snapshot()['mqtt.subscribe.refused{reason=taken_over}'], 1, 'the late SUBSCRIBE refused');
    // Nothing is queued for the session on the old connection's filter.
    const publisher = await connectClient(gateway.url, { clientId: 'publisher' });
    await publisher.client.publishAsync('late/1', 'late', { qos: 1 });
    assert.deepEqual(committed(path, "SELECT seq FROM queue WHERE client_id = 'dev'"), [], 'nothing queued for the late filter');
    await publisher.client.endAsync();
  });
}

// An UNSUBSCRIBE in the same window used to remove the filter from the stored session while
// the new connection, which had restored it, kept receiving on it: its next resume came back
// (Session Present 1) without the filter. It is now refused, the filter left in the session.
const unsubscribeCases = [
  { name: 'MQTT 3.1.1: a plain UNSUBACK (no reason codes)', version: 4, granted: undefined },
  { name: 'MQTT 5: UNSUBACK 0x87 (not authorized)', version: 5, granted: [0x87] },
] as const;

for (const { name, version, granted } of unsubscribeCases) {
  test(`an UNSUBSCRIBE of a connection being taken over, handled after the new connection's login, leaves the filter in the session. ${name}`, async () => {
    const device = await subscribedDevice(version);
    const { path, gateway, old } = device;
    const taking = await takeOver(device, version, false, { cmd: 'unsubscribe', messageId: 2, unsubscriptions: ['kept/#'] });
    assert.equal(connackOf(taking)?.sessionPresent, true, 'the new connection resumed the session');
    // Handled (answered) before the takeover closed the old connection.
    await until(() => old.got.some((p) => p.cmd === 'unsuback'), "the old connection's UNSUBACK");
    assert.deepEqual(subscriptionsOf(path), [{ topic: 'kept/#' }], "the session's subscriptions in broker.db");
    const unsuback = old.got.find((p): p is mqttPacket.IUnsubackPacket => p.cmd === 'unsuback');
    assert.deepEqual(unsuback?.granted, granted, "the UNSUBACK's reason codes");
    assert.equal(gateway.counters.snapshot()['mqtt.unsubscribe.refused{reason=taken_over}'], 1, 'the late UNSUBSCRIBE refused');
    // The new connection receives on the filter, and its next resume still has it.
    const publisher = await connectClient(gateway.url, { clientId: 'publisher' });
    await publisher.client.publishAsync('kept/1', 'live', { qos: 1 });
    await until(() => taking.got.some((p) => p.cmd === 'publish' && p.topic === 'kept/1'), 'the live message on the new connection');
    taking.send({ cmd: 'disconnect' });
    await until(() => taking.closed(), 'the new connection closed after its DISCONNECT');
    const next = await rawDevice(gateway.broker.port, version);
    next.send(device.connectPacket(false));
    await until(() => connackOf(next) !== undefined, 'the next connection accepted');
    assert.equal(connackOf(next)?.sessionPresent, true, 'the next connection resumed the session');
    await publisher.client.publishAsync('kept/2', 'resumed', { qos: 1 });
    await until(() => next.got.some((p) => p.cmd === 'publish' && p.topic === 'kept/2'), 'a message on the filter at the next resume');
    await publisher.client.endAsync();
  });
}

// The older connection may still be connecting (not registered) as the newer one logs in: aedes
// then registers it, sends its CONNACK and handles its packets while the newer one's takeover
// waits. Its SUBSCRIBE then used to be saved into the session the newer connection had looked up
// (Clean Start 0: a filter the newer connection did not hold, its messages queued for the next
// resume; Clean Start 1: a filter of the discarded session, brought back by the next resume).
// The test holds the older connection's session lookup until the newer one logged in, and the
// newer one's registration until the older one's SUBACK came.
const connectingCases = [
  { name: 'MQTT 3.1.1, Clean Session 0: the subscription is not saved into the session the new connection resumed', version: 4, cleanStart: false, refused: 0x80 },
  { name: 'MQTT 5, Clean Start 1: the subscription is not saved into the new session', version: 5, cleanStart: true, refused: 0x87 },
] as const;

for (const { name, version, cleanStart, refused } of connectingCases) {
  test(`a SUBSCRIBE after its CONNACK of a connection still connecting as a newer one logged in. ${name}`, async () => {
    const device = await subscribedDevice(version);
    const { path, auth, gateway, old: earlier, connectPacket } = device;
    earlier.send({ cmd: 'disconnect' });
    await until(() => earlier.closed(), 'the first connection closed after its DISCONNECT');
    const aedes = instances.created.at(-1) as Aedes;
    const persistence = (aedes as unknown as { persistence: { subscriptionsByClient(client: { id: string }): Promise<unknown> } }).persistence;
    const registering = aedes as unknown as { registerClient: (client: Client) => void };
    const registerClient = registering.registerClient.bind(aedes);
    const connects: Client[] = [];
    const preConnect = aedes.preConnect;
    aedes.preConnect = (client, packet, callback) => {
      connects.push(client);
      preConnect.call(aedes, client, packet, callback);
    };
    // The older connection's session lookup is answered once the newer one logged in.
    const subscriptionsByClient = persistence.subscriptionsByClient.bind(persistence);
    let releaseLookup: (() => void) | undefined;
    persistence.subscriptionsByClient = (client) => {
      const subs = subscriptionsByClient(client);
      if (client.id !== 'dev' || releaseLookup !== undefined) return subs;
      return new Promise((resolve) => {
        releaseLookup = () => resolve(subs);
      });
    };
    auth.onLogin = () => {
      if (connects.length === 2) releaseLookup?.();
    };
    // The newer connection's registration (its takeover of the older one) waits for the test.
    let releaseRegistration: (() => void) | undefined;
    registering.registerClient = (client) => {
      if (client === connects[1] && releaseRegistration === undefined) releaseRegistration = () => registerClient(client);
      else registerClient(client);
    };
    const older = await rawDevice(gateway.broker.port, version);
    older.send(connectPacket(false));
    await until(() => releaseLookup !== undefined, "the older connection's session lookup");
    const newer = await rawDevice(gateway.broker.port, version);
    newer.send(connectPacket(cleanStart));
    await until(() => connackOf(older) !== undefined, 'the older connection accepted');
    assert.equal(aedesInternals(aedes).clients.dev, connects[0], 'the older connection registered');
    older.send({ cmd: 'subscribe', messageId: 2, subscriptions: [{ topic: 'late/#', qos: 1 }] });
    await until(() => older.got.some((p) => p.cmd === 'suback'), "the older connection's SUBACK");
    await until(() => releaseRegistration !== undefined, "the newer connection's registration");
    const suback = older.got.find((p): p is mqttPacket.ISubackPacket => p.cmd === 'suback');
    assert.deepEqual(suback?.granted, [refused], 'the late SUBSCRIBE refused');
    assert.equal(gateway.counters.snapshot()['mqtt.subscribe.refused{reason=taken_over}'], 1);
    releaseRegistration?.();
    await until(() => connackOf(newer) !== undefined, 'the newer connection accepted');
    assert.equal(connackOf(newer)?.sessionPresent, !cleanStart);
    await until(() => older.closed(), 'the older connection taken over');
    assert.equal(aedesInternals(aedes).clients.dev, connects[1]);
    assert.deepEqual(subscriptionsOf(path), cleanStart ? [] : [{ topic: 'kept/#' }], "the session's subscriptions in broker.db");
    // Nothing is queued for the session on the older connection's filter.
    newer.send({ cmd: 'disconnect' });
    await until(() => newer.closed(), 'the newer connection closed after its DISCONNECT');
    const publisher = await connectClient(gateway.url, { clientId: 'publisher' });
    await publisher.client.publishAsync('late/1', 'late', { qos: 1 });
    await publisher.client.endAsync();
    assert.deepEqual(committed(path, "SELECT seq FROM queue WHERE client_id = 'dev'"), [], 'nothing queued for the late filter');
  });
}
