// Issue 16, items 4, 8 and 9: device data steering the MQTT sinks, input the gateway took
// unchecked, and a device's resend stored twice. Each test runs against `ferry run` and fails
// on the code before the fix.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { type RunningFerry, startFerry } from '../harness/ferry-process.ts';
import { credential, writeGatewayTree } from '../harness/gateway-tree.ts';
import { randomName, requireService } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-issue16-sinks-');

async function counters(gw: RunningFerry): Promise<Record<string, number>> {
  return ((await (await fetch(`${gw.adminUrl}/api/status`)).json()) as { counters: Record<string, number> }).counters;
}

async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/** A connected mqtt.js client noting every message it receives as `topic payload`. */
async function listener(url: string, options: IClientOptions): Promise<MqttClient & { seen: string[] }> {
  const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...options });
  const seen: string[] = [];
  client.on('message', (topic, payload) => seen.push(`${topic} ${payload.toString()}`));
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
    client.once('close', () => reject(new Error('closed before CONNACK')));
  });
  return Object.assign(client, { seen });
}

describe('device data cannot steer the devices and mqttClient sinks (issue 16, item 4)', () => {
  const PASSWORDS = { 'sensor-1': 'one-pass', 'sensor-2': 'two-pass' };
  let gw: RunningFerry;
  let mosquitto: string;
  const prefix = randomName('ferry-issue16-');
  const clients: MqttClient[] = [];

  before(async () => {
    mosquitto = await requireService('mqtt');
    const root = tempDir();
    const config = writeGatewayTree(root, '{allowAnonymous: loopback}', {
      'sensor.yaml':
        `name: sensor\nclientId: sensor-*\ncredentials:\n${await credential('sensor-1', PASSWORDS['sensor-1'])}${await credential('sensor-2', PASSWORDS['sensor-2'])}` +
        'acl: {publish: ["devices/%c/#"], subscribe: ["devices/%c/#"]}\n',
    });
    const bridge = (name: string, filter: string, sink: string) => writeFileSync(join(root, 'bridges', `${name}.yaml`), `name: ${name}\nfrom: {mqtt: {topics: ["${filter}"]}}\nto:\n  - ${sink}\n`);
    bridge('display', 'devices/+/telemetry/display', 'devices: {topic: "devices/${payload.display}/display"}');
    bridge('panel', 'devices/+/telemetry/panel', 'devices: {topic: "panels/${payload.panel}", onUnsafeTopicValue: escape}');
    bridge('command', 'devices/+/telemetry/cmd', 'devices: {topic: "devices/${payload.target}/commands/${payload.name}", allowedTopics: ["devices/+/commands/led"]}');
    bridge('upstream', 'devices/+/telemetry/site', `mqttClient: {url: "${mosquitto}", clientId: ${randomName('ferry-up-')}, topic: "${prefix}/sites/\${header.site}/data", batchTimeMs: 0}`);
    bridge('escaped', 'devices/+/telemetry/site', `mqttClient: {url: "${mosquitto}", clientId: ${randomName('ferry-esc-')}, topic: "${prefix}/escaped/\${header.site}", onUnsafeTopicValue: escape, batchTimeMs: 0}`);
    gw = await startFerry(['--config', config, '--data-dir', join(root, 'data')]);
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.endAsync(true)));
    gw?.child.kill('SIGTERM');
    await gw?.exited;
  });

  const login = async (clientId: keyof typeof PASSWORDS, extra: IClientOptions = {}) => {
    const client = await listener(gw.mqttUrl, { clientId, username: clientId, password: PASSWORDS[clientId], ...extra });
    clients.push(client);
    return client;
  };

  test("a payload field with '/' does not make the gateway publish to another device's commands", async () => {
    const victim = await login('sensor-2');
    await victim.subscribeAsync('devices/sensor-2/#', { qos: 1 });
    const sender = await login('sensor-1');
    await sender.publishAsync('devices/sensor-1/telemetry/display', JSON.stringify({ display: 'sensor-2/commands/unlock' }), { qos: 1 });
    await sender.publishAsync('devices/sensor-1/telemetry/display', JSON.stringify({ display: 'sensor-2' }), { qos: 1 });
    await until(() => victim.seen.length > 0, 'the second message on devices/sensor-2/display');
    await sleep(200);
    // Before the fix the first came as devices/sensor-2/commands/unlock/display, past sensor-1's ACL.
    assert.deepEqual(victim.seen, ['devices/sensor-2/display {"display":"sensor-2"}']);
    const c = await counters(gw);
    assert.equal(c['commands.invalid{bridge=display}'], 1, JSON.stringify(c));
    assert.equal(c['buffer.dead_letters{bridge=display,sink=devices}'], 1, JSON.stringify(c));
  });

  test('onUnsafeTopicValue: escape keeps the value in its level, percent-encoded', async () => {
    const watcher = await listener(gw.mqttUrl, { clientId: randomName('watch-') });
    clients.push(watcher);
    await watcher.subscribeAsync('panels/#', { qos: 1 });
    const sender = await login('sensor-1');
    await sender.publishAsync('devices/sensor-1/telemetry/panel', JSON.stringify({ panel: 'sensor-2/commands/+' }), { qos: 1 });
    await until(() => watcher.seen.length > 0, 'the escaped panel message');
    assert.deepEqual(watcher.seen, ['panels/sensor-2%2Fcommands%2F%2B {"panel":"sensor-2/commands/+"}']);
  });

  test('allowedTopics: a topic rendered outside them is refused', async () => {
    const victim = await login('sensor-2', { clientId: 'sensor-2' });
    await victim.subscribeAsync('devices/sensor-2/commands/#', { qos: 1 });
    const sender = await login('sensor-1');
    await sender.publishAsync('devices/sensor-1/telemetry/cmd', JSON.stringify({ target: 'sensor-2', name: 'unlock' }), { qos: 1 });
    await sender.publishAsync('devices/sensor-1/telemetry/cmd', JSON.stringify({ target: 'sensor-2', name: 'led' }), { qos: 1 });
    await until(() => victim.seen.length > 0, 'the allowed command');
    await sleep(200);
    assert.deepEqual(victim.seen, ['devices/sensor-2/commands/led {"target":"sensor-2","name":"led"}']);
    assert.equal((await counters(gw))['commands.invalid{bridge=command}'], 1);
  });

  test('an MQTT 5 user property with / and a newline does not reach an mqttClient topic verbatim', async () => {
    const upstream = await listener(mosquitto, { clientId: randomName('ferry-watch-') });
    clients.push(upstream);
    await upstream.subscribeAsync(`${prefix}/#`, { qos: 1 });
    const sender = await login('sensor-1', { protocolVersion: 5 });
    await sender.publishAsync('devices/sensor-1/telemetry/site', 'evil', { qos: 1, properties: { userProperties: { site: 'north/../../evil/\nx' } } });
    await sender.publishAsync('devices/sensor-1/telemetry/site', 'fine', { qos: 1, properties: { userProperties: { site: 'north' } } });
    await until(() => upstream.seen.length >= 3, `three messages under ${prefix}/ (seen: ${JSON.stringify(upstream.seen)})`);
    await sleep(300);
    assert.deepEqual(upstream.seen.filter((s) => s.startsWith(`${prefix}/sites/`)), [`${prefix}/sites/north/data fine`]);
    assert.deepEqual(upstream.seen.filter((s) => s.startsWith(`${prefix}/escaped/`)).sort(), [`${prefix}/escaped/north fine`, `${prefix}/escaped/north%2F..%2F..%2Fevil%2F%0Ax evil`]);
    const c = await counters(gw);
    assert.equal(c['mqtt.client.messages.rejected{bridge=upstream}'], 1, JSON.stringify(c));
    assert.equal(c['buffer.dead_letters{bridge=upstream,sink=mqttClient}'], 1, JSON.stringify(c));
  });
});
