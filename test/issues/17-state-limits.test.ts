// Issues 16 (item 6) and 17 (item 3): limits on the state one client can make the embedded broker
// keep. Against the built CLI (`ferry run`, mqtt.persistence sqlite) with low limits in its config
// and real clients (mqtt.js, mosquitto_pub): a subscription past the per-client cap gets SUBACK
// 0x80 (MQTT 3.1.1) or 0x97 (MQTT 5); a retained message past a per-client or gateway-wide cap
// gets PUBACK 0x97 (MQTT 5) or is taken without being retained (MQTT 3.1.1); an offline
// session's queue stops at its cap; an MQTT 3.1.1 persistent session expires. Each refusal is
// counted in /metrics and logged once per client and limit.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import type { IClientOptions, MqttClient } from 'mqtt';
import { eventually } from '../harness/eventually.ts';
import { type RunningFerry, startFerry } from '../harness/ferry-process.ts';
import { writeGatewayTree } from '../harness/gateway-tree.ts';
import { mosquittoPub } from '../harness/mosquitto.ts';
import { tempDirs } from '../harness/temp.ts';
import { type RecordingClient, connectRecording } from '../harness/recording-client.ts';

const tempDir = tempDirs('ferry-state-limits-');
const clients: MqttClient[] = [];
let gw: RunningFerry | undefined;
after(async () => {
  for (const c of clients) c.end(true);
  gw?.child.kill('SIGKILL');
});

const LIMITS = {
  subscriptionsPerClient: 3,
  retainedPerClient: 2,
  retainedBytesPerClient: 100,
  retainedMessages: 5,
  retainedBytes: 100_000,
  queuedPerSession: 3,
  queuedBytesPerSession: 100_000,
  sessionExpirySeconds: 2,
};

async function gateway(): Promise<RunningFerry> {
  if (gw !== undefined) return gw;
  const root = tempDir();
  const config = writeGatewayTree(root, `{allowAnonymous: true, limits: ${JSON.stringify(LIMITS)}}`, {});
  gw = await startFerry(['--config', config, '--data-dir', join(root, 'data')]);
  return gw;
}

async function client(options: IClientOptions): Promise<RecordingClient> {
  const running = await gateway();
  return connectRecording(running.mqttUrl, options, clients);
}

async function refusals(limit: string): Promise<number> {
  const text = await (await fetch(`${(await gateway()).adminUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`ferry_mqtt_state_refused_total{limit="${limit}"}`));
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

function logLines(clientId: string, limit: string): number {
  return (gw?.logs ?? []).filter((l) => l.clientId === clientId && l.limit === limit).length;
}

/** The SUBACK's codes (mqtt.js rejects a SUBACK with a failure in it, the packet attached). */
async function subscribe(c: MqttClient, filters: string | string[], qos: 0 | 1): Promise<number[]> {
  try {
    return (await c.subscribeAsync(filters, { qos })).map((g) => g.qos);
  } catch (error) {
    const granted = (error as { packet?: { granted?: unknown } }).packet?.granted;
    if (Array.isArray(granted)) return granted as number[];
    throw error;
  }
}

/** The retained messages a fresh subscriber to `filter` gets, as "topic payload", sorted. */
async function retainedUnder(filter: string, expected: number): Promise<string[]> {
  const { client: c, seen } = await client({ clientId: `reader-${Math.random().toString(36).slice(2)}` });
  await c.subscribeAsync(filter, { qos: 1 });
  // The marker is published after the subscription: it comes after every retained message.
  await c.publishAsync(`${filter.replace('#', '')}zz-marker`, 'end', { qos: 1 });
  await eventually(() => assert.ok(seen.some((s) => s.endsWith('zz-marker end'))));
  await c.endAsync();
  const got = seen.filter((s) => !s.endsWith('zz-marker end')).sort();
  assert.equal(got.length, expected, `retained under ${filter}: ${got.join(', ')}`);
  return got;
}

describe('limits on broker state (mqtt.limits)', { timeout: 120_000 }, () => {
  test('a subscription past subscriptionsPerClient gets SUBACK 0x80 (MQTT 3.1.1) or 0x97 (MQTT 5); a re-subscribe is allowed; refusals counted, logged once', async () => {
    const before = await refusals('subscriptionsPerClient');
    const v4 = await client({ clientId: 'subs-311', protocolVersion: 4 });
    assert.deepEqual(await subscribe(v4.client, ['a/1', 'a/2', 'a/3', 'a/4'], 1), [1, 1, 1, 128]);
    // A filter it holds already is not a new one; another new one is refused again.
    assert.deepEqual(await subscribe(v4.client, 'a/2', 0), [0]);
    assert.deepEqual(await subscribe(v4.client, 'a/5', 0), [128]);
    // Room again after an unsubscribe.
    await v4.client.unsubscribeAsync('a/1');
    assert.deepEqual(await subscribe(v4.client, 'a/6', 0), [0]);

    const v5 = await client({ clientId: 'subs-5', protocolVersion: 5 });
    assert.deepEqual(await subscribe(v5.client, ['b/1', 'b/2', 'b/3', 'b/4'], 1), [1, 1, 1, 0x97]);
    assert.equal(await refusals('subscriptionsPerClient'), before + 3);
    await eventually(() => assert.equal(logLines('subs-311', 'subscriptionsPerClient'), 1, 'two refusals of one client within a minute: one log line'));
    await eventually(() => assert.equal(logLines('subs-5', 'subscriptionsPerClient'), 1));
  });

  test('a refused filter of a persistent session is not saved: after reconnecting it holds only what was granted', async () => {
    const first = await client({ clientId: 'subs-saved', clean: false });
    assert.deepEqual(await subscribe(first.client, ['s/1', 's/2', 's/3', 's/4', 's/5'], 1), [1, 1, 1, 128, 128]);
    await first.client.endAsync();
    const again = await client({ clientId: 'subs-saved', clean: false });
    assert.equal(again.sessionPresent, true);
    const pub = await client({ clientId: 'subs-saved-pub' });
    for (const t of ['s/1', 's/4', 's/5', 's/3']) await pub.client.publishAsync(t, t, { qos: 1 });
    await eventually(() => assert.deepEqual(again.seen, ['s/1 s/1', 's/3 s/3']));
    await again.client.endAsync();
    await pub.client.endAsync();
  });

  test('retained messages past a per-client limit: PUBACK 0x97 under MQTT 5; under MQTT 3.1.1 taken but not retained', async () => {
    const before = await refusals('retainedPerClient');
    const v5 = await client({ clientId: 'ret-5', protocolVersion: 5 });
    await v5.client.publishAsync('r5/a', 'one', { qos: 1, retain: true });
    await v5.client.publishAsync('r5/b', 'two', { qos: 1, retain: true });
    // Replacing one of its own is not a new one.
    await v5.client.publishAsync('r5/a', 'one again', { qos: 1, retain: true });
    await assert.rejects(v5.client.publishAsync('r5/c', 'three', { qos: 1, retain: true }), (error: Error & { code?: number }) => {
      assert.equal(error.code, 0x97, String(error));
      return true;
    });
    // Too many bytes for the client (100): refused by the byte limit.
    await assert.rejects(v5.client.publishAsync('r5/b', 'x'.repeat(101), { qos: 1, retain: true }), (error: Error & { code?: number }) => error.code === 0x97);
    // Clearing one makes room.
    await v5.client.publishAsync('r5/b', '', { qos: 1, retain: true });
    await v5.client.publishAsync('r5/c', 'three', { qos: 1, retain: true });
    await v5.client.endAsync();
    assert.deepEqual(await retainedUnder('r5/#', 2), ['r5/a one again', 'r5/c three']);

    for (const [i, topic] of ['r4/a', 'r4/b', 'r4/c'].entries()) {
      const result = await mosquittoPub((await gateway()).mqttUrl, topic, `m${i}`, { qos: 1, retain: true, clientId: 'ret-311' });
      assert.equal(result.code, 0, `mosquitto_pub gets its PUBACK: ${result.stderr}`);
    }
    assert.deepEqual(await retainedUnder('r4/#', 2), ['r4/a m0', 'r4/b m1']);
    assert.equal(await refusals('retainedPerClient'), before + 2);
    assert.equal(await refusals('retainedBytesPerClient'), 1);
  });

  test('retained messages past the gateway-wide limit are refused whoever publishes them', async () => {
    // 4 are stored already (r5/a, r5/c, r4/a, r4/b); the limit is 5.
    await mosquittoPub((await gateway()).mqttUrl, 'rg/a', 'a', { qos: 1, retain: true, clientId: 'ret-g1' });
    const v5 = await client({ clientId: 'ret-g2', protocolVersion: 5 });
    await assert.rejects(v5.client.publishAsync('rg/b', 'b', { qos: 1, retain: true }), (error: Error & { code?: number }) => error.code === 0x97);
    await v5.client.endAsync();
    assert.equal(await refusals('retainedMessages'), 1);
    assert.deepEqual(await retainedUnder('rg/#', 1), ['rg/a a']);
  });

  test("an offline session's queue stops at queuedPerSession: the rest is dropped for it and counted; others still get them", async () => {
    const offline = await client({ clientId: 'q-offline', clean: false });
    await offline.client.subscribeAsync('q/#', { qos: 1 });
    await offline.client.endAsync();
    const online = await client({ clientId: 'q-online' });
    await online.client.subscribeAsync('q/#', { qos: 1 });
    for (let i = 1; i <= 5; i++) {
      const result = await mosquittoPub((await gateway()).mqttUrl, `q/${i}`, `m${i}`, { qos: 1 });
      assert.equal(result.code, 0);
    }
    await eventually(() => assert.equal(online.seen.length, 5));
    assert.equal(await refusals('queuedPerSession'), 2);
    const back = await client({ clientId: 'q-offline', clean: false });
    assert.equal(back.sessionPresent, true);
    // A message published now comes after the queued ones.
    await online.client.publishAsync('q/after', 'after', { qos: 1 });
    await eventually(() => assert.deepEqual(back.seen, ['q/1 m1', 'q/2 m2', 'q/3 m3', 'q/after after']));
    assert.equal(logLines('q-offline', 'queuedPerSession'), 1);
  });

  test('a session whose queue is full, resumed while messages keep coming: the device is not disconnected, and gets the messages in order, each once', async () => {
    const publisher = await client({ clientId: 'q-pump' });
    for (let round = 0; round < 5; round++) {
      const id = `q-resume-${round}`;
      const first = await client({ clientId: id, clean: false, protocolVersion: 5, properties: { sessionExpiryInterval: 600 } });
      await first.client.subscribeAsync(`qr/${round}/#`, { qos: 1 });
      await first.client.endAsync();
      // The queue fills up (queuedPerSession is 3), then messages keep coming while the device
      // resumes its session. One refused for the queue while the device was away, or coming back
      // (until its registration, with its will stored in between), could reach its restored
      // subscriptions live a moment later without a queued copy: the broker closed the connection.
      // Such a message is dropped for the session, as any refused for its queue.
      for (let i = 0; i < 3; i++) await publisher.client.publishAsync(`qr/${round}/q`, `q${i}`, { qos: 1 });
      let sending = true;
      let sent = 0;
      const pump = (async () => {
        while (sending) {
          await publisher.client.publishAsync(`qr/${round}/p`, `p${sent++}`, { qos: 1 });
        }
      })();
      const will = { topic: `qr/${round}/will`, payload: Buffer.from('gone'), qos: 1 as const };
      const back = await client({ clientId: id, clean: false, protocolVersion: 5, properties: { sessionExpiryInterval: 600 }, will });
      let closed = false;
      back.client.on('close', () => (closed = true));
      await eventually(() => assert.ok(back.seen.length >= 13 || closed, `round ${round}: ${back.seen.length} messages`));
      sending = false;
      await pump;
      assert.equal(closed, false, `round ${round}: the device is still connected`);
      const live = back.seen.filter((m) => m.includes(' p')).map((m) => Number(m.split(' p')[1]));
      assert.deepEqual(
        live,
        live.toSorted((a, b) => a - b).filter((n, i, all) => i === 0 || n !== all[i - 1]),
        `round ${round}: in order, each once`,
      );
      assert.deepEqual(
        back.seen.slice(0, 3),
        [0, 1, 2].map((i) => `qr/${round}/q q${i}`),
        `round ${round}: its queue first`,
      );
      await back.client.endAsync();
    }
  });

  test('an MQTT 3.1.1 persistent session expires sessionExpirySeconds after its client left', async () => {
    const first = await client({ clientId: 'exp-311', clean: false, protocolVersion: 4 });
    await first.client.subscribeAsync('exp/#', { qos: 1 });
    await first.client.endAsync();
    await eventually(() => assert.ok((gw?.logs ?? []).some((l) => l.clientId === 'exp-311' && String(l.msg).includes('saved session expired'))), { timeoutMs: 15_000 });
    const again = await client({ clientId: 'exp-311', clean: false, protocolVersion: 4 });
    assert.equal(again.sessionPresent, false);
    await again.client.endAsync();
  });
});
