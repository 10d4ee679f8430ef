// Issue 17: the embedded broker's state survives restarts. Against the built CLI (`ferry run`,
// default config: mqtt.persistence sqlite) with real clients (mqtt.js, mosquitto_pub and
// mosquitto_sub): a retained message, persistent sessions (MQTT 3.1.1 Clean Session 0, MQTT 5
// with a Session Expiry Interval) with their subscriptions and a QoS 1 message queued while
// their device was offline are all there after a graceful stop (SIGTERM) and after SIGKILL; a
// device reconnecting gets "session present" and the queued message, once.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, test } from 'node:test';
import { type IClientOptions, type MqttClient, connect } from 'mqtt';
import { type RunningFerry, ferry, startFerry } from '../harness/ferry-process.ts';
import { writeGatewayTree } from '../harness/gateway-tree.ts';
import { eventually } from '../harness/eventually.ts';
import { mosquittoPub, mosquittoSub } from '../harness/mosquitto.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-issue-17-');
const running = new Set<RunningFerry>();
const clients: MqttClient[] = [];
after(async () => {
  for (const c of clients) c.end(true);
  for (const gw of running) gw.child.kill('SIGKILL');
});

const DEVICES = {
  'dev-311': { protocolVersion: 4, clean: false },
  'dev-5': { protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 600 } },
} as const satisfies Record<string, IClientOptions>;

async function start(config: string, dataDir: string): Promise<RunningFerry> {
  const gw = await startFerry(['--config', config, '--data-dir', dataDir]);
  running.add(gw);
  return gw;
}

async function stop(gw: RunningFerry, signal: 'SIGTERM' | 'SIGKILL'): Promise<void> {
  gw.child.kill(signal);
  const code = await gw.exited;
  running.delete(gw);
  if (signal === 'SIGTERM') assert.equal(code, 0, 'a graceful stop exits 0');
}

async function device(url: string, clientId: keyof typeof DEVICES): Promise<{ client: MqttClient; sessionPresent: boolean; seen: string[] }> {
  const client = connect(url, { clientId, reconnectPeriod: 0, connectTimeout: 5000, ...DEVICES[clientId] });
  clients.push(client);
  const seen: string[] = [];
  // Queued messages can come in the same read as the CONNACK: listen from the start.
  client.on('message', (topic, payload) => seen.push(`${topic} ${payload.toString()}`));
  const connack = await new Promise<{ sessionPresent: boolean }>((resolve, reject) => {
    client.once('connect', resolve);
    client.once('error', reject);
    client.once('close', () => reject(new Error('closed before CONNACK')));
  });
  return { client, sessionPresent: connack.sessionPresent, seen };
}

async function until(check: () => boolean, what: string, ms = 10_000): Promise<void> {
  for (const end = Date.now() + ms; !check(); ) {
    if (Date.now() > end) assert.fail(`${what}: not within ${ms} ms`);
    await sleep(25);
  }
}

async function pub(url: string, topic: string, message: string, options: { retain?: boolean } = {}): Promise<void> {
  const result = await mosquittoPub(url, topic, message, { qos: 1, ...options });
  assert.equal(result.code, 0, `mosquitto_pub ${topic}: ${result.stderr}`);
}

for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
  describe(`broker state across a ${signal === 'SIGTERM' ? 'graceful stop (SIGTERM)' : 'crash (SIGKILL)'}`, () => {
    test('a retained message, persistent sessions and their queued QoS 1 messages are there after the restart; each message arrives once', { timeout: 90_000 }, async () => {
      const root = tempDir();
      const config = writeGatewayTree(root, '{allowAnonymous: true}', {});
      const dataDir = join(root, 'data');
      let gw = await start(config, dataDir);

      await pub(gw.mqttUrl, 'site/door', 'closed', { retain: true });
      for (const id of Object.keys(DEVICES) as (keyof typeof DEVICES)[]) {
        const d = await device(gw.mqttUrl, id);
        assert.equal(d.sessionPresent, false);
        await d.client.subscribeAsync(`cmd/${id}/#`, { qos: 1 });
        await d.client.endAsync();
      }
      // Mosquitto's own client makes a persistent session too (-c), and leaves it.
      // Long enough for its SUBACK (which waits for the commit) on a busy machine: a shorter run
      // may leave before its subscription is stored, and then nothing is queued for it.
      // On a busy machine it may leave (-W) before its SUBACK: then it goes again, until
      // `ferry sessions show` finds its subscription stored.
      await eventually(
        async () => {
          const mosq = mosquittoSub(gw.mqttUrl, ['cmd/dev-mosq/#'], 1, { clientId: 'dev-mosq', cleanSession: false, timeoutS: 3 });
          assert.deepEqual(await mosq.messages, []);
          const shown = await ferry(['sessions', 'show', 'dev-mosq', '--json', '--data-dir', dataDir]);
          assert.match(shown.stdout, /cmd\/dev-mosq\/#/, `dev-mosq's subscription is not stored yet: ${shown.stderr}`);
        },
        { timeoutMs: 30_000, intervalMs: 100 },
      );
      for (const id of [...Object.keys(DEVICES), 'dev-mosq']) await pub(gw.mqttUrl, `cmd/${id}/reboot`, `for ${id}`);

      await stop(gw, signal);
      gw = await start(config, dataDir);

      const retained = mosquittoSub(gw.mqttUrl, ['site/#'], 1, { timeoutS: 5 });
      assert.deepEqual(await retained.messages, ['site/door closed']);
      for (const id of Object.keys(DEVICES) as (keyof typeof DEVICES)[]) {
        const d = await device(gw.mqttUrl, id);
        assert.equal(d.sessionPresent, true, `${id}: session present`);
        await until(() => d.seen.length > 0, `${id}: its queued message`);
        await sleep(300);
        assert.deepEqual(d.seen, [`cmd/${id}/reboot for ${id}`]);
        await d.client.endAsync();
      }
      const mosqBack = mosquittoSub(gw.mqttUrl, ['cmd/dev-mosq/#'], 1, { clientId: 'dev-mosq', cleanSession: false, timeoutS: 10 });
      assert.deepEqual(await mosqBack.messages, ['cmd/dev-mosq/reboot for dev-mosq']);

      // Acknowledged before this second restart: not sent again after it.
      await sleep(200);
      await stop(gw, signal);
      gw = await start(config, dataDir);
      for (const id of Object.keys(DEVICES) as (keyof typeof DEVICES)[]) {
        const d = await device(gw.mqttUrl, id);
        assert.equal(d.sessionPresent, true, `${id}: session still present`);
        await pub(gw.mqttUrl, `cmd/${id}/marker`, 'm');
        await until(() => d.seen.length > 0, `${id}: the marker`);
        assert.deepEqual(d.seen, [`cmd/${id}/marker m`], `${id}: nothing but the marker`);
        await d.client.endAsync();
      }
      await stop(gw, 'SIGTERM');
    });
  });
}

const PUBLISHERS = {
  'pub-311': { protocolVersion: 4, clean: false },
  'pub-5': { protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 600 } },
} as const satisfies Record<string, IClientOptions>;

/** Connects, publishes one QoS 1 reading, leaves, and says whether the CONNACK had Session Present. */
async function sessionPresent(url: string, clientId: string, options: IClientOptions): Promise<boolean> {
  const client = connect(url, { clientId, reconnectPeriod: 0, connectTimeout: 5000, ...options });
  clients.push(client);
  const connack = await new Promise<{ sessionPresent: boolean }>((resolve, reject) => {
    client.once('connect', resolve);
    client.once('error', reject);
    client.once('close', () => reject(new Error('closed before CONNACK')));
  });
  await client.publishAsync(`telemetry/${clientId}`, 'reading', { qos: 1 });
  await client.endAsync();
  return connack.sessionPresent;
}

test('the persistent session of a device that only publishes (no subscriptions) is present when it comes back, after a crash too; not once a clean session replaced it [MQTT-3.2.2-2]', {
  timeout: 60_000,
}, async () => {
  const root = tempDir();
  const config = writeGatewayTree(root, '{allowAnonymous: true}', {});
  const dataDir = join(root, 'data');
  let gw = await start(config, dataDir);
  for (const [id, options] of Object.entries(PUBLISHERS)) {
    assert.equal(await sessionPresent(gw.mqttUrl, id, options), false, `${id}: a new session`);
    assert.equal(await sessionPresent(gw.mqttUrl, id, options), true, `${id}: its session, resumed`);
  }
  await sleep(200);
  await stop(gw, 'SIGKILL');
  gw = await start(config, dataDir);
  for (const [id, options] of Object.entries(PUBLISHERS)) {
    assert.equal(await sessionPresent(gw.mqttUrl, id, options), true, `${id}: its session, after the restart`);
    // A clean session that ends with its connection (MQTT 5: Session Expiry Interval 0) replaces it.
    assert.equal(await sessionPresent(gw.mqttUrl, id, { ...options, clean: true, properties: {} }), false, `${id}: a clean session`);
    assert.equal(await sessionPresent(gw.mqttUrl, id, options), false, `${id}: no session after the clean one ended`);
  }
  await stop(gw, 'SIGTERM');
});

test('the will of a device connected when the gateway was killed is published after the restart: its connection ended without a DISCONNECT', { timeout: 60_000 }, async () => {
  const root = tempDir();
  const config = writeGatewayTree(root, '{allowAnonymous: true}', {});
  const dataDir = join(root, 'data');
  let gw = await start(config, dataDir);
  const watcher = { clientId: 'watcher', protocolVersion: 4, clean: false } as const;
  const w = connect(gw.mqttUrl, { ...watcher, reconnectPeriod: 0 });
  clients.push(w);
  await w.subscribeAsync('status/#', { qos: 1 });
  w.end(true);
  const dev = connect(gw.mqttUrl, { clientId: 'dev-will', reconnectPeriod: 0, will: { topic: 'status/dev-will', payload: Buffer.from('offline'), qos: 1, retain: false } });
  clients.push(dev);
  await new Promise((resolve) => dev.once('connect', resolve));

  await stop(gw, 'SIGKILL');
  dev.end(true);
  gw = await start(config, dataDir);
  const back = connect(gw.mqttUrl, { ...watcher, reconnectPeriod: 0 });
  clients.push(back);
  const seen: string[] = [];
  back.on('message', (topic, payload) => seen.push(`${topic} ${payload.toString()}`));
  await until(() => seen.length > 0, 'the will');
  await sleep(300);
  assert.deepEqual(seen, ['status/dev-will offline']);
  back.end(true);
  await stop(gw, 'SIGTERM');
});
