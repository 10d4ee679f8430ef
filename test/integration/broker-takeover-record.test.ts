// A persistent session taking its client id over from a connected clean session, and the
// other way round. Real aedes (as patched) on the SQLite persistence, devices on raw sockets.
//
// The new connection's session record is on disk before its CONNACK (connect-writes.ts). The
// old connection's end, which comes during the takeover, used to remove that record (a clean
// session's end), and aedes' 'client' event wrote it again, without its owner, a moment later.
// Whether a crash then loses the record depends on the two writes falling into different
// commits (a transaction's cap on writes splits them), which a test cannot time from outside:
// a SQLite trigger on the real file records each removal of a session's record instead.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { type Socket, connect } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import mqttPacket from 'mqtt-packet';
import pino from 'pino';
import { openBrokerState } from '../../src/mqtt/persistence/open.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { aedesOnState } from '../harness/aedes-on-state.ts';
import { eventually } from '../harness/eventually.ts';
import { tempDirs } from '../harness/temp.ts';

const dirs = tempDirs('ferry-takeover-record-');

async function startBroker(t: { after(f: () => void | Promise<void>): void }) {
  const path = join(dirs(), 'broker.db');
  const persistence = openBrokerState({ path, synchronous: 'full' }, { logger: pino({ level: 'silent' }), counters: new CounterRegistry() });
  const { aedes, port, close: stop } = await aedesOnState(persistence, { quiet: true });
  t.after(stop);
  // Each removal of a session's record, as the broker's own connection commits it.
  const watcher = new Database(path);
  watcher.exec(`CREATE TABLE removed_records (client_id TEXT);
    CREATE TRIGGER record_removed AFTER DELETE ON sessions BEGIN INSERT INTO removed_records VALUES (old.client_id); END;`);
  const removed = () => (watcher.prepare('SELECT client_id FROM removed_records').all() as { client_id: string }[]).map((r) => r.client_id);
  t.after(() => {
    watcher.close();
  });
  return { aedes, port, stop, removed, watcher };
}

/** Sends CONNECT and resolves with the CONNACK's Session Present; the socket stays open. */
async function hello(port: number, packet: Partial<mqttPacket.IConnectPacket>): Promise<{ present: boolean; socket: Socket }> {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => {});
  await once(socket, 'connect');
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  const present = new Promise<boolean>((resolve) => {
    parser.on('packet', (p: mqttPacket.Packet) => {
      if (p.cmd === 'connack') resolve(p.sessionPresent);
    });
  });
  socket.on('data', (chunk: Buffer) => parser.parse(chunk));
  socket.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: false, clientId: '', keepalive: 60, ...packet }));
  return { present: await present, socket };
}

test('a persistent session taking its client id over from a connected clean session: its record is never removed, and is there after the broker stops', async (t) => {
  const { aedes, port, stop, removed, watcher } = await startBroker(t);
  const clean = await hello(port, { clientId: 'dev', clean: true });
  const persistent = await hello(port, { clientId: 'dev', clean: false });
  assert.equal(persistent.present, false, 'a new session');
  await eventually(() => assert.equal(clean.socket.closed, true, 'the clean connection was taken over'));
  assert.equal(aedes.connectedClients, 1);
  // Everything the broker wrote is committed as it stops.
  await stop();
  persistent.socket.destroy();
  assert.deepEqual(removed(), [], 'removals of the record');
  assert.equal(watcher.prepare("SELECT count(*) AS n FROM sessions WHERE client_id = 'dev'").pluck().get(), 1, 'the record');
});

test('a clean session taking its client id over from a connected persistent one: the record goes (Clean Start), and the old connection does not write it back', async (t) => {
  const { port, stop, removed, watcher } = await startBroker(t);
  const persistent = await hello(port, { clientId: 'dev', clean: false });
  const clean = await hello(port, { clientId: 'dev', clean: true });
  assert.equal(clean.present, false);
  await eventually(() => assert.equal(persistent.socket.closed, true, 'the persistent connection was taken over'));
  await stop();
  clean.socket.destroy();
  assert.deepEqual(removed(), ['dev'], 'removals of the record');
  assert.equal(watcher.prepare("SELECT count(*) AS n FROM sessions WHERE client_id = 'dev'").pluck().get(), 0, 'the record');
});
