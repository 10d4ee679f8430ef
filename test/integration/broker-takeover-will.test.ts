// A connection taken over by a new CONNECT with the same client id has its will published (it
// did not send DISCONNECT), and aedes then removes the will stored under that id. The new
// connection's CONNECT stored its own will before it took the old one over, so that removal took
// the new connection's will out of broker.db: a crash of the gateway then lost it, and the
// device's will was never published. Real embedded broker on SQLite, real mqtt.js devices on
// loopback; the crash is a copy of broker.db taken (SQLite's backup) while the device is
// connected, what a kill -9 leaves on disk.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { committed, crashCopy, stateBrokers, until } from '../harness/state-broker.ts';
import { tempDirs } from '../harness/temp.ts';

const dirs = tempDirs('ferry-takeover-will-');
const { start, stop, connectClient } = stateBrokers();

const device = (will: string, protocolVersion: 4 | 5) => ({
  clientId: 'dev',
  protocolVersion,
  will: { topic: 'status/dev', payload: Buffer.from(will), qos: 1 as const, retain: false },
});

for (const protocolVersion of [4, 5] as const) {
  test(`MQTT ${protocolVersion}: the will of a connection taken over does not remove the new connection's will`, { timeout: 30_000 }, async () => {
    const path = join(dirs(), 'broker.db');
    const first = await start(path);
    const old = await connectClient(first.url, device('A', protocolVersion));
    const taking = await connectClient(first.url, device('B', protocolVersion));
    await until(() => first.tapped.includes('status/dev A'), "the old connection's will");
    await until(() => !old.client.connected, 'the old connection closed');
    // The old will's removal follows its publish; on the old code it lands within a few milliseconds.
    await sleep(300);
    const wills = committed(path, 'SELECT client_id, CAST(payload AS TEXT) AS payload FROM wills') as { payload: string }[];
    assert.deepEqual(
      wills.map((w) => w.payload),
      ['B'],
      "the new connection's will is stored",
    );
    // The gateway crashes with the new connection open: after the restart its will is published.
    const crashed = await crashCopy(path, dirs());
    taking.client.end(true);
    await stop(first);
    const second = await start(crashed);
    await until(() => second.tapped.includes('status/dev B'), "the new connection's will, after the restart");
    assert.deepEqual(second.tapped, ['status/dev B']);
    await stop(second);
  });
}
