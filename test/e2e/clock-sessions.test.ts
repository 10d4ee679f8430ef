// The wall clock stepped a year forward (NTP setting the clock of a gateway that booted without a
// real-time clock) while `ferry run` times the sessions it carried over from its last run: the
// first one due must end alone, not every session with it, whatever its expiry. The process
// runs under libfaketime (its wall clock moved by rewriting a file, its monotonic clock left
// alone): the machine's own clock is never touched.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { connect, type IConnackPacket, type MqttClient } from 'mqtt';
import { eventually } from '../harness/eventually.ts';
import { fakeClock } from '../harness/fake-clock.ts';
import { startFerry } from '../harness/ferry-process.ts';
import { tempDirs } from '../harness/temp.ts';

const SHORT_S = 10;

const dirs = tempDirs('ferry-e2e-clock-sessions-');

/** Connects `clientId` (MQTT 5, a session kept `expiry` s): the client and its CONNACK. */
async function device(url: string, clientId: string, expiry: number): Promise<{ client: MqttClient; connack: IConnackPacket }> {
  const client = connect(url, { clientId, protocolVersion: 5, clean: false, reconnectPeriod: 0, properties: { sessionExpiryInterval: expiry } });
  const connack = await new Promise<IConnackPacket>((resolve, reject) => {
    client.once('connect', resolve);
    client.once('error', reject);
  });
  return { client, connack };
}

test('sessions carried over from the last run: a clock set a year forward ends only those due, not all of them', { timeout: 120_000 }, async (t) => {
  const root = dirs();
  const clock = fakeClock(root);
  writeFileSync(join(root, 'gateway.yaml'), 'mqtt: {allowAnonymous: loopback}\nbridges: []\ndevices: []\n');
  const args = ['--config', join(root, 'gateway.yaml'), '--data-dir', join(root, 'data')];
  const env = clock.env;

  const first = await startFerry(args, env);
  t.after(() => first.child.kill('SIGKILL'));
  for (const [id, expiry] of [
    ['short', SHORT_S],
    ['long', 3600],
  ] as const) {
    const { client } = await device(first.mqttUrl, id, expiry);
    await client.subscribeAsync('c/#', { qos: 1 });
    await client.endAsync();
  }
  first.child.kill('SIGTERM');
  assert.equal(await first.exited, 0);

  const second = await startFerry(args, env);
  t.after(() => second.child.kill('SIGKILL'));
  clock.set('+365d');
  const expired = () => second.logs.filter((l) => String(l['msg']).startsWith('saved session expired')).map((l) => l['clientId']);
  // The short session ends when due (SHORT_S after its client left), on the monotonic clock.
  await eventually(() => assert.ok(expired().includes('short'), 'the short session did not end'), { timeoutMs: 30_000 });
  assert.deepEqual(expired(), ['short'], 'a session an hour from its end ended with the one due');
  const { client, connack } = await device(second.mqttUrl, 'long', 3600);
  t.after(() => client.end(true));
  assert.equal(connack.sessionPresent, true, 'the long session was gone');
});
