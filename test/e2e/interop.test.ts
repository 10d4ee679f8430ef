import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { type IClientOptions, type IConnackPacket, type MqttClient, connect, connectAsync } from 'mqtt';
import { type RunningFerry, startFerry } from '../harness/ferry-process.ts';
import { mosquittoPub, mosquittoSub } from '../harness/mosquitto.ts';
import { tempDirs } from '../harness/temp.ts';
import { eventually } from '../harness/eventually.ts';

// Mosquitto's own clients and mqtt.js against the embedded broker of the embedded default
// (anonymous clients allowed from loopback), under MQTT 3.1.1 and MQTT 5.
const tempDir = tempDirs('ferry-interop-');
let gw: RunningFerry;

before(async () => {
  gw = await startFerry(['--config', 'config/gateway.yaml', '--data-dir', tempDir()], { KAFKA_BROKERS: '' });
});

after(async () => {
  gw.child.kill('SIGTERM');
  await gw.exited;
});

/** Resolves with the first message a client receives, as "topic payload". */
function nextMessage(client: MqttClient): Promise<string> {
  return new Promise((resolve) => client.once('message', (topic, payload) => resolve(`${topic} ${payload.toString()}`)));
}

for (const { name, protocol, protocolVersion } of [
  { name: 'MQTT 3.1.1', protocol: 'mqttv311', protocolVersion: 4 },
  { name: 'MQTT 5', protocol: 'mqttv5', protocolVersion: 5 },
] as const) {
  const t = `interop/${protocol}`;
  const id = (clientId: string) => `${clientId}-${protocol}`;
  const mqttjs = (clientId: string, options: IClientOptions = {}): IClientOptions => ({ clientId: id(clientId), protocolVersion, reconnectPeriod: 0, ...options });
  const pub = async (topic: string, message: string, options: Parameters<typeof mosquittoPub>[3] = {}): Promise<void> => {
    const result = await mosquittoPub(gw.mqttUrl, topic, message, { protocol, ...options });
    assert.equal(result.code, 0, result.stderr);
  };
  // Under MQTT 5 a session outlives its connection only with a session expiry interval.
  const persistent: IClientOptions = protocolVersion === 5 ? { clean: false, properties: { sessionExpiryInterval: 300 } } : { clean: false };

  describe(name, () => {
    test('QoS 0, 1 and 2 from mosquitto_pub reach mosquitto_sub, with + and # filters', { timeout: 20_000 }, async () => {
      const sub = mosquittoSub(gw.mqttUrl, [`${t}/+/qos`, `${t}/deep/#`], 4, { qos: 2, protocol });
      await sub.ready;
      for (const qos of [0, 1, 2] as const) await pub(`${t}/q${qos}/qos`, `qos ${qos}`, { qos });
      await pub(`${t}/deep/a/b/c`, 'deep');
      assert.deepEqual((await sub.messages).sort(), [`${t}/deep/a/b/c deep`, `${t}/q0/qos qos 0`, `${t}/q1/qos qos 1`, `${t}/q2/qos qos 2`]);
    });

    test('a retained message is given to later subscribers until an empty retained message clears it', { timeout: 20_000 }, async () => {
      await pub(`${t}/retained/state`, 'on', { retain: true });
      const first = mosquittoSub(gw.mqttUrl, [`${t}/retained/#`], 1, { timeoutS: 3, protocol });
      assert.deepEqual(await first.messages, [`${t}/retained/state on`]);
      await pub(`${t}/retained/state`, '', { retain: true });
      const second = mosquittoSub(gw.mqttUrl, [`${t}/retained/#`], 1, { timeoutS: 1, protocol });
      assert.deepEqual(await second.messages, []);
    });

    test("a client's will is published when its connection dies, not when it disconnects cleanly", { timeout: 20_000 }, async () => {
      const sub = mosquittoSub(gw.mqttUrl, [`${t}/will/#`], 1, { timeoutS: 4, protocol });
      await sub.ready;
      const clean = await connectAsync(gw.mqttUrl, mqttjs('interop-clean', { will: { topic: `${t}/will/clean`, payload: Buffer.from('gone'), qos: 1, retain: false } }));
      await clean.endAsync();
      const dying = await connectAsync(gw.mqttUrl, mqttjs('interop-dying', { will: { topic: `${t}/will/dying`, payload: Buffer.from('gone'), qos: 1, retain: false } }));
      dying.stream.destroy();
      assert.deepEqual(await sub.messages, [`${t}/will/dying gone`]);
    });

    test('a persistent session keeps QoS 1 messages for its client while it is offline', { timeout: 20_000 }, async () => {
      const options = mqttjs('interop-persistent', persistent);
      const first = await connectAsync(gw.mqttUrl, options);
      await first.subscribeAsync(`${t}/session/#`, { qos: 1 });
      await first.endAsync();
      await pub(`${t}/session/x`, 'while away');
      // The broker sends the kept message right after CONNACK: listen before connecting.
      const second = connect(gw.mqttUrl, options);
      assert.equal(await nextMessage(second), `${t}/session/x while away`);
      await second.endAsync();
    });

    test('after UNSUBSCRIBE nothing more arrives on that filter; other subscriptions go on', { timeout: 20_000 }, async () => {
      const client = await connectAsync(gw.mqttUrl, mqttjs('interop-unsub'));
      const seen: string[] = [];
      client.on('message', (topic) => seen.push(topic));
      await client.subscribeAsync([`${t}/unsub/a`, `${t}/unsub/b`], { qos: 1 });
      await client.unsubscribeAsync(`${t}/unsub/a`);
      await pub(`${t}/unsub/a`, 'x');
      await pub(`${t}/unsub/b`, 'y');
      // The marker: b was published after a by the same client, so a would have come first.
      await eventually(() => assert.notEqual(seen.length, 0), { timeoutMs: 5000 });
      assert.deepEqual(seen, [`${t}/unsub/b`]);
      await client.endAsync();
    });
  });
}

describe('MQTT 5 only', () => {
  const v5 = (clientId: string, options: IClientOptions = {}): IClientOptions => ({ clientId, protocolVersion: 5, reconnectPeriod: 0, ...options });

  test('CONNACK tells the limits; a device may use topic aliases; shared subscriptions are available', { timeout: 20_000 }, async () => {
    const subscriber = await connectAsync(gw.mqttUrl, v5('v5-alias-sub'));
    await subscriber.subscribeAsync('v5/alias/#', { qos: 1 });
    const seen: string[] = [];
    subscriber.on('message', (topic, payload) => seen.push(`${topic} ${payload.toString()}`));
    const device = connect(gw.mqttUrl, v5('v5-alias-device'));
    const connack = await new Promise<IConnackPacket>((resolve) => device.once('connect', resolve));
    assert.equal(connack.properties?.topicAliasMaximum, 16);
    assert.equal(connack.properties?.maximumPacketSize, 256 * 1024);
    await device.publishAsync('v5/alias/a-long-topic-name', 'first', { qos: 1, properties: { topicAlias: 1 } });
    await device.publishAsync('', 'second', { qos: 1, properties: { topicAlias: 1 } });
    await eventually(() => assert.ok(!(seen.length < 2), 'still: seen.length < 2'), { timeoutMs: 5000 });
    assert.deepEqual(seen, ['v5/alias/a-long-topic-name first', 'v5/alias/a-long-topic-name second']);
    assert.equal(connack.properties?.sharedSubscriptionAvailable, true);
    assert.deepEqual(
      (await device.subscribeAsync('$share/group/v5/alias/#', { qos: 1 })).map((g) => g.qos),
      [1],
    );
    await Promise.all([device.endAsync(), subscriber.endAsync()]);
  });

  test('user properties from mosquitto_pub reach an MQTT 5 subscriber', { timeout: 20_000 }, async () => {
    const subscriber = await connectAsync(gw.mqttUrl, v5('v5-props-sub'));
    await subscriber.subscribeAsync('v5/props/#', { qos: 1 });
    const received = new Promise<unknown>((resolve) => subscriber.once('message', (_topic, _payload, packet) => resolve(packet.properties?.userProperties)));
    const url = new URL(gw.mqttUrl);
    const { spawn } = await import('node:child_process');
    const child = spawn('mosquitto_pub', [
      '-h',
      url.hostname,
      '-p',
      url.port,
      '-V',
      'mqttv5',
      '-q',
      '1',
      '-t',
      'v5/props/x',
      '-m',
      'with props',
      '-D',
      'publish',
      'user-property',
      'site',
      'north',
    ]);
    await new Promise((resolve) => child.once('close', resolve));
    assert.deepEqual({ ...((await received) as object) }, { site: 'north' });
    await subscriber.endAsync();
  });

  test('a session ends at its expiry interval: later messages are not kept for it', { timeout: 20_000 }, async () => {
    const options = v5('v5-expiring', { clean: false, properties: { sessionExpiryInterval: 1 } });
    const first = await connectAsync(gw.mqttUrl, options);
    await first.subscribeAsync('v5/expiring/#', { qos: 1 });
    await first.endAsync();
    await sleep(2000);
    const publisher = await connectAsync(gw.mqttUrl, v5('v5-expiring-pub'));
    await publisher.publishAsync('v5/expiring/x', 'after expiry', { qos: 1 });
    await publisher.endAsync();
    const second = connect(gw.mqttUrl, options);
    const seen: string[] = [];
    second.on('message', (topic) => seen.push(topic));
    const connack = await new Promise<IConnackPacket>((resolve) => second.once('connect', resolve));
    assert.equal(connack.sessionPresent, false);
    await sleep(500);
    assert.deepEqual(seen, []);
    await second.endAsync();
  });

  test('a message past its expiry interval is not delivered from a session', { timeout: 20_000 }, async () => {
    const options = v5('v5-msg-expiry', { clean: false, properties: { sessionExpiryInterval: 60 } });
    const first = await connectAsync(gw.mqttUrl, options);
    await first.subscribeAsync('v5/msg-expiry/#', { qos: 1 });
    await first.endAsync();
    const publisher = await connectAsync(gw.mqttUrl, v5('v5-msg-expiry-pub'));
    await publisher.publishAsync('v5/msg-expiry/short', 'gone', { qos: 1, properties: { messageExpiryInterval: 1 } });
    await publisher.publishAsync('v5/msg-expiry/long', 'kept', { qos: 1, properties: { messageExpiryInterval: 60 } });
    await publisher.endAsync();
    await sleep(2000);
    const second = connect(gw.mqttUrl, options);
    const message = await new Promise<{ text: string; expiry: number | undefined }>((resolve) =>
      second.once('message', (topic, payload, packet) => resolve({ text: `${topic} ${payload.toString()}`, expiry: packet.properties?.messageExpiryInterval })),
    );
    assert.equal(message.text, 'v5/msg-expiry/long kept');
    assert.ok(message.expiry !== undefined && message.expiry <= 58, `remaining expiry ${message.expiry}`);
    await second.endAsync();
  });

  test('a will with a delay is published after the delay, and not at all when the client is back in time', { timeout: 20_000 }, async () => {
    const subscriber = await connectAsync(gw.mqttUrl, v5('v5-will-sub'));
    const seen: { text: string; at: number }[] = [];
    subscriber.on('message', (topic, payload) => seen.push({ text: `${topic} ${payload.toString()}`, at: Date.now() }));
    await subscriber.subscribeAsync('v5/will/#', { qos: 1 });
    const will = (topic: string) => ({ topic, payload: Buffer.from('gone'), qos: 1 as const, retain: false, properties: { willDelayInterval: 1 } });
    const session = { clean: false, properties: { sessionExpiryInterval: 30 } };
    const late = await connectAsync(gw.mqttUrl, v5('v5-will-late', { ...session, will: will('v5/will/late') }));
    const back = await connectAsync(gw.mqttUrl, v5('v5-will-back', { ...session, will: will('v5/will/back') }));
    const died = Date.now();
    late.stream.destroy();
    back.stream.destroy();
    await sleep(300);
    const returned = await connectAsync(gw.mqttUrl, v5('v5-will-back', session));
    await sleep(2000);
    assert.deepEqual(
      seen.map((m) => m.text),
      ['v5/will/late gone'],
    );
    assert.ok((seen[0]?.at ?? 0) - died >= 900, 'not before the will delay');
    await Promise.all([returned.endAsync(), subscriber.endAsync()]);
  });
});
