// A device whose connection drops while its CONNECT waits for the commit of its session's record
// or its will (the CONNACK waits for that commit). Real aedes (as patched) on the SQLite
// persistence, devices on raw sockets. Once the commit came, aedes went on with the connect
// sequence and registered the closed client as connected: nothing ever unregistered it (counted
// as connected, its session never waiting for it nor expiring). A session such a connect made is
// not kept either: its device was never told of it. The drop is made at the moment the connect
// reaches its will step, by wrapping the persistence's delWill (a device cannot time it from
// outside).
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import type { Client } from 'aedes';
import mqttPacket from 'mqtt-packet';
import pino from 'pino';
import { openBrokerState } from '../../src/mqtt/persistence/open.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { aedesOnState } from '../harness/aedes-on-state.ts';
import { eventually } from '../harness/eventually.ts';
import { tempDirs } from '../harness/temp.ts';

const dirs = tempDirs('ferry-connect-abandoned-');

async function startBroker(t: { after(f: () => Promise<void>): void }) {
  const persistence = openBrokerState({ path: join(dirs(), 'broker.db'), synchronous: 'full' }, { logger: pino({ level: 'silent' }), counters: new CounterRegistry() });
  const { aedes, port, close } = await aedesOnState(persistence, { quiet: true });
  t.after(close);
  // The connection of a client whose id is in `drop` ends as its connect reaches the will step.
  const drop = new Set<string>();
  const delWill = persistence.delWill.bind(persistence);
  persistence.delWill = (client) => {
    const connecting = client as Client;
    if (connecting.connecting && drop.delete(connecting.id)) connecting.conn.destroy();
    return delWill(client);
  };
  return { aedes, persistence, port, drop };
}

/** Sends CONNECT; resolves with the CONNACK's Session Present, or 'closed' when the connection ended without one. */
async function hello(port: number, packet: Partial<mqttPacket.IConnectPacket>): Promise<boolean | 'closed'> {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => {});
  await once(socket, 'connect');
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  const answer = new Promise<boolean | 'closed'>((resolve) => {
    parser.on('packet', (p: mqttPacket.Packet) => {
      if (p.cmd === 'connack') resolve(p.sessionPresent);
    });
    socket.on('close', () => resolve('closed'));
  });
  socket.on('data', (chunk: Buffer) => parser.parse(chunk));
  socket.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: false, clientId: '', keepalive: 60, ...packet }));
  const present = await answer;
  socket.destroy();
  return present;
}

const WILL = { topic: 'status/dev', payload: Buffer.from('offline'), qos: 1 as const, retain: false };
const CASES: Record<string, Partial<mqttPacket.IConnectPacket>> = {
  'a persistent session without a will': { clean: false },
  'a persistent session with a will': { clean: false, will: WILL },
  'a clean session with a will': { clean: true, will: WILL },
};

for (const [name, packet] of Object.entries(CASES)) {
  test(`${name}: a connection dropped while its connect waits for the commit is not left connected, and a new session it made is not kept`, async (t) => {
    const { aedes, port, drop } = await startBroker(t);
    drop.add('dev');
    assert.equal(await hello(port, { ...packet, clientId: 'dev' }), 'closed', 'no CONNACK');
    // The commit, and whatever aedes does after it, come within a few turns.
    await sleep(100);
    assert.equal(aedes.connectedClients, 0, 'connected clients');
    assert.equal((aedes as unknown as { clients: Record<string, unknown> }).clients['dev'], undefined, 'registered client');
    // The device was never told of a session: none is there when it comes back.
    assert.equal(await hello(port, { ...packet, clientId: 'dev', clean: false }), false, 'Session Present');
  });
}

test('a resumed session whose connection dropped while its connect waited for the commit is still there, waiting for its device', async (t) => {
  const { aedes, port, drop } = await startBroker(t);
  assert.equal(await hello(port, { clientId: 'dev' }), false);
  await eventually(() => assert.equal(aedes.connectedClients, 0));
  drop.add('dev');
  assert.equal(await hello(port, { clientId: 'dev' }), 'closed', 'no CONNACK');
  await sleep(100);
  assert.equal(aedes.connectedClients, 0, 'connected clients');
  assert.equal(await hello(port, { clientId: 'dev' }), true, 'Session Present');
});
