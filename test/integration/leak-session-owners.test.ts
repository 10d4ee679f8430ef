// Memory of ended sessions: the embedded broker (real aedes, SQLite state, mqtt.js and raw
// sockets on loopback) must not keep the connections of sessions that ended. Each connection is
// followed with a WeakRef from aedes' preConnect; after its session ended and a full garbage
// collection, none may be left. A gateway runs for months with thousands of client ids coming
// and going: whatever stays per connection adds up without bound.
import assert from 'node:assert/strict';
import { connect as connectSocket } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { connectAsync } from 'mqtt';
import pino from 'pino';
import { deviceSchema } from '../../src/config/schema.ts';
import { DeviceAuthenticator } from '../../src/mqtt/auth.ts';
import { hashPassword } from '../../src/mqtt/password.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { type FollowedBroker, alive, followedBrokers } from '../harness/connection-leaks.ts';
import { eventually } from '../harness/eventually.ts';
import { connectPacket } from '../harness/mqtt-wire.ts';
import { tempDirs } from '../harness/temp.ts';

const N = 30;
const PASSWORD = 'device-secret';
const dirs = tempDirs('ferry-leak-owners-');
const startFollowed = followedBrokers();

async function start(): Promise<FollowedBroker & { readonly counters: CounterRegistry }> {
  const counters = new CounterRegistry();
  const hash = await hashPassword(PASSWORD);
  const auth = new DeviceAuthenticator({
    profiles: [deviceSchema().parse({ name: 'sensor', clientId: 'sensor-*', credentials: [{ username: 'sensor-*', passwordHash: hash, clientId: '%u' }] })],
    allowAnonymous: true,
    anonymousAcl: { publish: ['#'], subscribe: ['#'] },
    maxConnectionsPerAddress: 10_000,
    maxAuthFailures: 10 * N,
    // Room for every device's check at once: each one below runs to its end.
    loginChecks: { concurrent: 2, queued: 256, perAddress: 2 * N, perUsername: 2 * N },
    counters,
  });
  const followed = await startFollowed({
    host: '127.0.0.1',
    port: 0,
    logger: pino({ level: 'silent' }),
    counters,
    auth,
    state: { path: join(dirs(), 'broker.db'), synchronous: 'normal' },
    limits: {
      subscriptionsPerClient: 10,
      retainedPerClient: 10,
      retainedBytesPerClient: 10_000,
      retainedMessages: 100,
      retainedBytes: 100_000,
      queuedPerSession: 10,
      queuedBytesPerSession: 10_000,
      sessionExpirySeconds: 1,
    },
  });
  return { ...followed, counters };
}

const expired = (counters: CounterRegistry) => counters.families().get('mqtt.sessions.expired')?.[0]?.value ?? 0;

test('MQTT 3.1.1 persistent sessions that expired after mqtt.limits.sessionExpirySeconds leave none of their connections in memory', { timeout: 60_000 }, async () => {
  const { broker, counters, connections } = await start();
  for (let i = 0; i < N; i++) {
    const client = await connectAsync(`mqtt://127.0.0.1:${broker.port}`, { clientId: `legacy-${i}`, clean: false, protocolVersion: 4, reconnectPeriod: 0 });
    await client.subscribeAsync(`devices/legacy-${i}/commands/#`, { qos: 1 });
    await client.endAsync();
  }
  assert.equal(connections.length, N);
  await eventually(() => assert.equal(expired(counters), N), { timeoutMs: 20_000 });
  assert.equal(await alive(connections), 0, 'connections of expired sessions still in memory');
});

test('MQTT 5 sessions that expired after their Session Expiry Interval leave none of their connections in memory', { timeout: 60_000 }, async () => {
  const { broker, counters, connections } = await start();
  for (let i = 0; i < N; i++) {
    const client = await connectAsync(`mqtt://127.0.0.1:${broker.port}`, {
      clientId: `v5-${i}`,
      clean: false,
      protocolVersion: 5,
      properties: { sessionExpiryInterval: 1 },
      reconnectPeriod: 0,
    });
    await client.subscribeAsync(`devices/v5-${i}/commands/#`, { qos: 1 });
    await client.endAsync();
  }
  await eventually(() => assert.equal(expired(counters), N), { timeoutMs: 20_000 });
  assert.equal(await alive(connections), 0, 'connections of expired sessions still in memory');
});

test('connections that close while their password is checked leave nothing in memory', { timeout: 60_000 }, async () => {
  const { broker, connections } = await start();
  for (let i = 0; i < N; i++) {
    const socket = connectSocket(broker.port, '127.0.0.1');
    socket.on('error', () => {});
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write(connectPacket(`sensor-${i}`, 60, true, { username: `sensor-${i}`, password: PASSWORD }));
    // Gone before its password check (a scrypt) ends, whose success is then for a closed connection.
    socket.destroy();
    await new Promise((resolve) => socket.once('close', resolve));
  }
  await eventually(() => assert.equal(connections.length, N));
  assert.equal(await alive(connections), 0, 'connections closed during their login still in memory');
});
