import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, test } from 'node:test';
import { connect, connectAsync } from 'mqtt';
import { type RunningFerry, startFerry } from '../harness/ferry-process.ts';
import { mosquittoPub, mosquittoSub } from '../harness/mosquitto.ts';
import { tempDirs } from '../harness/temp.ts';

// Mosquitto's own clients and mqtt.js against the embedded broker of the embedded default
// (anonymous clients allowed from loopback).
const tempDir = tempDirs('ferry-interop-');
let gw: RunningFerry;

before(async () => {
  gw = await startFerry(['--config', 'config/gateway.yaml', '--data-dir', tempDir()], { KAFKA_BROKERS: '' });
});

after(async () => {
  gw.child.kill('SIGTERM');
  await gw.exited;
});

async function pub(topic: string, message: string, options: Parameters<typeof mosquittoPub>[3] = {}): Promise<void> {
  const result = await mosquittoPub(gw.mqttUrl, topic, message, options);
  assert.equal(result.code, 0, result.stderr);
}

test('QoS 0, 1 and 2 from mosquitto_pub reach mosquitto_sub, with + and # filters', { timeout: 20_000 }, async () => {
  const sub = mosquittoSub(gw.mqttUrl, ['interop/+/qos', 'interop/deep/#'], 4, { qos: 2 });
  await sub.ready;
  for (const qos of [0, 1, 2] as const) await pub(`interop/q${qos}/qos`, `qos ${qos}`, { qos });
  await pub('interop/deep/a/b/c', 'deep');
  assert.deepEqual((await sub.messages).sort(), ['interop/deep/a/b/c deep', 'interop/q0/qos qos 0', 'interop/q1/qos qos 1', 'interop/q2/qos qos 2']);
});

test('a retained message is given to later subscribers until an empty retained message clears it', { timeout: 20_000 }, async () => {
  await pub('interop/retained/state', 'on', { retain: true });
  const first = mosquittoSub(gw.mqttUrl, ['interop/retained/#'], 1, { timeoutS: 3 });
  assert.deepEqual(await first.messages, ['interop/retained/state on']);
  await pub('interop/retained/state', '', { retain: true });
  const second = mosquittoSub(gw.mqttUrl, ['interop/retained/#'], 1, { timeoutS: 1 });
  assert.deepEqual(await second.messages, []);
});

test("a client's will is published when its connection dies, not when it disconnects cleanly", { timeout: 20_000 }, async () => {
  const sub = mosquittoSub(gw.mqttUrl, ['interop/will/#'], 1, { timeoutS: 4 });
  await sub.ready;
  const clean = await connectAsync(gw.mqttUrl, { clientId: 'interop-clean', reconnectPeriod: 0, will: { topic: 'interop/will/clean', payload: Buffer.from('gone'), qos: 1, retain: false } });
  await clean.endAsync();
  const dying = await connectAsync(gw.mqttUrl, { clientId: 'interop-dying', reconnectPeriod: 0, will: { topic: 'interop/will/dying', payload: Buffer.from('gone'), qos: 1, retain: false } });
  dying.stream.destroy();
  assert.deepEqual(await sub.messages, ['interop/will/dying gone']);
});

test('a persistent session keeps QoS 1 messages for its client while it is offline', { timeout: 20_000 }, async () => {
  const options = { clientId: 'interop-persistent', clean: false, reconnectPeriod: 0 } as const;
  const first = await connectAsync(gw.mqttUrl, options);
  await first.subscribeAsync('interop/session/#', { qos: 1 });
  await first.endAsync();
  await pub('interop/session/x', 'while away');
  // The broker sends the kept message right after CONNACK: listen before connecting.
  const second = connect(gw.mqttUrl, options);
  const received = await new Promise<string>((resolve) => second.on('message', (topic, payload) => resolve(`${topic} ${payload.toString()}`)));
  assert.equal(received, 'interop/session/x while away');
  await second.endAsync();
});

test('after UNSUBSCRIBE nothing more arrives on that filter; other subscriptions go on', { timeout: 20_000 }, async () => {
  const client = await connectAsync(gw.mqttUrl, { clientId: 'interop-unsub', reconnectPeriod: 0 });
  const seen: string[] = [];
  client.on('message', (topic) => seen.push(topic));
  await client.subscribeAsync(['interop/unsub/a', 'interop/unsub/b'], { qos: 1 });
  await client.unsubscribeAsync('interop/unsub/a');
  await pub('interop/unsub/a', 'x');
  await pub('interop/unsub/b', 'y');
  for (let i = 0; i < 40 && seen.length === 0; i++) await sleep(50);
  await sleep(200);
  assert.deepEqual(seen, ['interop/unsub/b']);
  await client.endAsync();
});
