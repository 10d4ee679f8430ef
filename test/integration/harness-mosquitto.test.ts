import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { connectAsync, type IPublishPacket } from 'mqtt';
import { randomName, requireService } from '../harness/services.ts';

test('mosquitto: a QoS 1 mosquitto_pub reaches an mqtt.js subscriber', { timeout: 30_000 }, async (t) => {
  const url = await requireService('mqtt');
  const client = await connectAsync(url, { clientId: randomName('ferry-test-'), reconnectPeriod: 0 });
  t.after(() => client.endAsync());

  const topic = randomName('ferry/test/harness/');
  const payload = JSON.stringify({ device: 'harness', at: Date.now() });
  await client.subscribeAsync(topic, { qos: 1 });
  const arrived = new Promise<[string, Buffer, IPublishPacket]>((resolve) => {
    client.once('message', (...message) => resolve(message));
  });

  await mosquittoPub(url, topic, payload);

  const [gotTopic, gotPayload, packet] = await arrived;
  assert.equal(gotTopic, topic);
  assert.equal(gotPayload.toString(), payload);
  assert.equal(packet.qos, 1);
});

async function mosquittoPub(brokerUrl: string, topic: string, message: string): Promise<void> {
  const url = new URL(brokerUrl);
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1') || '127.0.0.1';
  const args = ['-h', host, '-p', url.port || '1883', '-q', '1', '-t', topic, '-m', message];
  if (url.username) args.push('-u', decodeURIComponent(url.username));
  if (url.password) args.push('-P', decodeURIComponent(url.password));
  const child = spawn('mosquitto_pub', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', (err: NodeJS.ErrnoException) =>
      reject(err.code === 'ENOENT' ? new Error('mosquitto_pub is not on PATH: install it with `apt-get install -y mosquitto-clients`') : err),
    );
    child.once('close', resolve);
  });
  assert.equal(code, 0, `mosquitto_pub failed: ${stderr.trim()}`);
}
