// A delayed will of a connection that left (real aedes, SQLite state, mqtt.js on loopback) is not
// published once a newer connection of its client id came to its session within the delay
// ([MQTT-3.1.3-9]), also when that one closed during its connect, after its connect changed the
// session (its will step, or its Clean Start's discard), and so never held the id: nobody holding
// the id then, the older connection's will was published from memory once its delay was over.
//
// The test holds the real persistence's answer to the newer connect's session change until its
// network connection dropped: its connect goes no further, it is never registered.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Aedes, Client } from 'aedes';
import { type MqttClient, connect, connectAsync } from 'mqtt';
import { aedesInternals } from '../../src/mqtt/aedes-internals.ts';
import { eventually } from '../harness/eventually.ts';
import { committed } from '../harness/state-broker.ts';
import { stateBrokers } from '../harness/takeover-brokers.ts';

type Change = (client: Client) => Promise<unknown>;
interface Persistence {
  delWill: Change;
  cleanSubscriptions: Change;
}

const start = stateBrokers<Persistence>('ferry-takeover-wills-');

const registered = (aedes: Aedes) => aedesInternals(aedes).clients;
const storedWills = (path: string) => (committed(path, 'SELECT payload FROM wills') as { payload: Buffer }[]).map((row) => Buffer.from(row.payload).toString());

/** An MQTT 5 persistent session's options; `willPayload`: a will to `topic`, waiting 1 s. */
function v5(clientId: string, options: { clean?: boolean; willPayload?: string; topic?: string } = {}) {
  const { clean = false, willPayload, topic = 'wills-will' } = options;
  const will = willPayload === undefined ? {} : { will: { topic, payload: Buffer.from(willPayload), qos: 1 as const, retain: false, properties: { willDelayInterval: 1 } } };
  return { clientId, protocolVersion: 5 as const, clean, properties: { sessionExpiryInterval: 30 }, reconnectPeriod: 0, ...will };
}

/** A connection subscribed to `topic` and the payloads it got there. */
async function watch(url: string, topic: string): Promise<{ watcher: MqttClient; payloads: string[] }> {
  const watcher = await connectAsync(url, { clientId: `${topic}-watcher`, reconnectPeriod: 0 });
  const payloads: string[] = [];
  watcher.on('message', (_topic, payload) => payloads.push(payload.toString()));
  await watcher.subscribeAsync(topic, { qos: 1 });
  return { watcher, payloads };
}

const changes = [
  { change: 'its will step', step: 'delWill', clean: false },
  { change: 'its Clean Start', step: 'cleanSubscriptions', clean: true },
] as const;

for (const { change, step, clean } of changes) {
  test(`a newer connection closed during its connect, after ${change}, leaves an older connection's delayed will unpublished`, { timeout: 60_000 }, async () => {
    const { aedes, url, path, persistence } = await start();
    const id = `wills-${step}`;
    const topic = `${id}-will`;
    const watched0 = await watch(url, topic);
    // The older connection's network connection drops: its will waits its 1 s delay, stored.
    const older = await connectAsync(url, v5(id, { willPayload: 'older gone', topic }));
    older.on('error', () => {});
    older.stream.destroy();
    await eventually(() => assert.equal(registered(aedes)[id], undefined));
    await eventually(() => assert.deepEqual(storedWills(path), ['older gone']));
    // A newer connection comes to the session; its network connection drops as its connect
    // changes the session, before it is registered.
    const original = persistence[step].bind(persistence);
    let newer: Client | undefined;
    let release: (() => void) | undefined;
    persistence[step] = (client) => {
      const changed = original(client);
      if (client.id !== id || newer !== undefined || !('conn' in client)) return changed;
      newer = client;
      return new Promise((resolve) => {
        release = () => resolve(changed);
      });
    };
    const second = connect(url, v5(id, { clean }));
    second.on('error', () => {});
    await eventually(() => assert.notEqual(release, undefined));
    second.stream.destroy();
    await eventually(() => assert.equal(newer?.closed, true));
    release?.();
    await sleep(100);
    assert.equal(registered(aedes)[id], undefined);
    // (the watcher)
    assert.equal(aedes.connectedClients, 1);
    // A connection came to the session within the older one's delay: its will is never published.
    await sleep(2_000);
    assert.deepEqual(watched0.payloads, [], "the older connection's will was published after its delay");
    assert.deepEqual(storedWills(path), []);
    await watched0.watcher.endAsync();
    older.end(true);
    second.end(true);
  });
}
