// Issue 12: Eclipse Paho's Python client (Debian's python3-paho-mqtt) in MQTT 5 mode against
// `ferry run`: a shared subscription with a subscription identifier, and the Maximum Packet
// Size it announced honoured.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import { eventually } from '../harness/eventually.ts';
import { connectMqtt5, gatewayForFile } from '../harness/mqtt5-gateway.ts';
import { randomName } from '../harness/services.ts';

const SUBSCRIBER = fileURLToPath(new URL('../harness/paho-subscriber.py', import.meta.url));
const file = gatewayForFile('ferry-issue12-paho-');
const { clients } = file;

/** Runs the Paho subscriber; `lines` fills as it prints, `exited` resolves with all of them. */
function pahoSubscriber(args: readonly string[]): { lines: string[]; exited: Promise<string[]> } {
  // Debian's python3 (where python3-paho-mqtt installs), not a python3 earlier on PATH.
  const child = spawn('/usr/bin/python3', [SUBSCRIBER, ...args], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  after(() => {
    if (child.exitCode === null && child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
  });
  const lines: string[] = [];
  let stderr = '';
  let pending = '';
  child.stdout.on('data', (chunk: Buffer) => {
    pending += chunk.toString();
    const parts = pending.split('\n');
    pending = parts.pop() ?? '';
    lines.push(...parts);
  });
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<string[]>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => {
      if (/No module named 'paho'/.test(stderr)) reject(new Error('python3-paho-mqtt is missing: install it with `apt-get install -y python3-paho-mqtt`'));
      else if (code !== 0) reject(new Error(`paho subscriber exited with ${code}: ${stderr}`));
      else resolve(lines);
    });
  });
  // A test that fails before awaiting it kills the process: that rejection is not the failure.
  exited.catch(() => {});
  return { lines, exited };
}

test('Paho (Python, MQTT 5) in a shared subscription with a subscription identifier gets its turns, tagged, and nothing over its Maximum Packet Size', async () => {
  const topic = `paho/${randomName('t-')}`;
  const filter = `$share/${randomName('g')}/${topic}`;
  const { hostname, port } = new URL(file.gw.mqttUrl);
  const paho = pahoSubscriber([hostname, port, randomName('paho-'), filter, '11', '300', '15']);
  // Paho failing to start (not installed, refused) fails the test at once, with its reason.
  await Promise.race([
    eventually(() => assert.ok(paho.lines.includes('ready'), `paho printed: ${paho.lines.join(' | ')}`), { timeoutMs: 15_000 }),
    paho.exited.then((lines) => assert.fail(`paho exited before it was ready: ${lines.join(' | ')}`)),
  ]);
  assert.deepEqual(JSON.parse(paho.lines[0] ?? '{}'), { suback: [1] });
  const other = await connectMqtt5(file.gw.mqttUrl, randomName('other-'));
  clients.push(other.client);
  await other.client.subscribeAsync(filter, { qos: 1 });
  const sender = await connectMqtt5(file.gw.mqttUrl, randomName('sender-'));
  clients.push(sender.client);
  // Paho joined first: it gets m1, m3 and, as its turn comes, the big one, which is not sent
  // to it and is done with for the group (nobody gets it), then "last".
  for (const payload of ['m1', 'm2', 'm3', 'm4', 'x'.repeat(1000), 'm5', 'last']) await sender.client.publishAsync(topic, payload, { qos: 1 });
  const lines = await paho.exited;
  const messages = lines.filter((l) => l.startsWith('{"topic')).map((l) => JSON.parse(l) as { topic: string; payload: string; subscriptionIdentifier: number[] | null });
  assert.deepEqual(
    messages.map((m) => [m.topic, m.payload, m.subscriptionIdentifier]),
    [
      [topic, 'm1', [11]],
      [topic, 'm3', [11]],
      [topic, 'last', [11]],
    ],
  );
  assert.equal(lines.at(-1), 'exit');
  await eventually(() =>
    assert.deepEqual(
      other.publishes.map((p) => p.payload.toString()),
      ['m2', 'm4', 'm5'],
    ),
  );
});
