// Issue 19: the external-broker mode says what it cannot keep.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { startFerry } from '../harness/ferry-process.ts';
import { startPrivateMosquitto } from '../harness/private-mosquitto.ts';
import { randomName } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-issue19-');

async function eventually<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await probe();
    if (value !== undefined) return value;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
}

test('a broker restarted without persistence: the lost session is logged and counted, Ferry is back within reconnectMaxMs; refuse on this source is warned about at startup', async () => {
  const dir = tempDir();
  mkdirSync(join(dir, 'mosquitto'));
  const mosquitto = await startPrivateMosquitto(join(dir, 'mosquitto'), 'persistence false');
  const root = join(dir, 'gw');
  mkdirSync(join(root, 'bridges'), { recursive: true });
  writeFileSync(join(root, 'gateway.yaml'), 'mqtt: {allowAnonymous: loopback}\nbridges: [bridges]\n');
  writeFileSync(
    join(root, 'bridges/ext.yaml'),
    `name: ext\nfrom: {mqttClient: {url: "${mosquitto.url}", clientId: ${randomName('ferry-ext-')}, topics: ["plant/#"], cleanSession: false}}\nto: [{history: {}}]\n`,
  );
  const gw = await startFerry(['--config', join(root, 'gateway.yaml'), '--data-dir', join(root, 'data')]);
  const messages = () => gw.logs.map((l) => String(l['msg']));
  try {
    await eventually('the first connection', () => (messages().includes('connected to the external broker') ? true : undefined));
    assert.ok(messages().some((m) => /^buffer\.overflow: refuse on a mqttClient source: when the buffer is full, Ferry stops acknowledging to the external broker/.test(m)));
    await mosquitto.stop('SIGTERM');
    await mosquitto.start();
    const restarted = Date.now();
    await eventually('the lost session warning', () => (messages().some((m) => m.startsWith("the external broker lost this client's session")) ? true : undefined));
    assert.ok(Date.now() - restarted < 8_000, 'back within reconnectMaxMs (5 s) of the broker, with room for a busy machine');
    const status = (await (await fetch(`${gw.adminUrl}/api/status`)).json()) as { counters: Record<string, number> };
    assert.equal(status.counters['mqtt.client.session_lost{bridge=ext}'], 1);
  } finally {
    gw.child.kill('SIGTERM');
    await gw.exited;
    await mosquitto.stop('SIGKILL').catch(() => {});
  }
});
