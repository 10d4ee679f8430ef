// Issue 19, item 1: a broker dropping the mqttClient source's messages is detected, warned about
// once per episode and counted, and shown in /api/status; a load Ferry keeps up with raises nothing.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { connectAsync } from 'mqtt';
import { HistoryReader } from '../../src/sqlite/history-store.ts';
import { blackHole } from '../harness/black-hole.ts';
import { eventually } from '../harness/eventually.ts';
import { type RunningFerry, startFerry } from '../harness/ferry-process.ts';
import { type PrivateMosquitto, startPrivateMosquitto } from '../harness/private-mosquitto.ts';
import { randomName } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-issue19-drops-');

interface SourceStatus {
  brokerDropCounter: string;
  brokerLog: string;
  brokerDropped: number;
  brokerDroppedWhileBehind: number;
  droppingForThisClient: number;
  behindForMs?: number;
  inFlight: number;
}

interface Status {
  counters: Record<string, number>;
  bridges: { name: string; source?: SourceStatus }[];
}

const status = async (gw: RunningFerry) => (await (await fetch(`${gw.adminUrl}/api/status`)).json()) as Status;
const messages = (gw: RunningFerry) => gw.logs.map((l) => ({ level: Number(l['level']), msg: String(l['msg']) }));
const WARN = 40;

/**
 * A private Mosquitto that publishes its drop counter every second and its notices on
 * `$SYS/broker/log/N`, a gateway with one `mqttClient` bridge, and the source subscribed.
 */
async function setUp(mosquittoConfig: string, bridgeRest: string): Promise<{ mosquitto: PrivateMosquitto; gw: RunningFerry; clientId: string; root: string }> {
  const root = tempDir();
  mkdirSync(join(root, 'mosquitto'));
  mkdirSync(join(root, 'bridges'));
  const mosquitto = await startPrivateMosquitto(join(root, 'mosquitto'), ['persistence false', 'sys_interval 1', 'log_dest topic', mosquittoConfig].join('\n'));
  const clientId = randomName('ferry-drops-');
  writeFileSync(join(root, 'gateway.yaml'), 'gateway: {dataDir: data}\nmqtt: {host: 127.0.0.1, allowAnonymous: loopback}\nbridges: [bridges]\n');
  writeFileSync(
    join(root, 'bridges', 'ext.yaml'),
    `name: ext\nfrom: {mqttClient: {url: "${mosquitto.url}", clientId: ${clientId}, topics: ["plant/#"], lossWatch: {behindAfterMs: 1000}}}\n${bridgeRest}`,
  );
  const gw = await startFerry(['--config', join(root, 'gateway.yaml')]);
  await eventually(() => assert.ok(mosquitto.log().includes(`${clientId} 1 plant/#`), 'the source subscribed'), { timeoutMs: 20_000 });
  await eventually(async () => assert.equal((await status(gw)).bridges[0]?.source?.brokerDropCounter, 'watching'), { timeoutMs: 20_000 });
  return { mosquitto, gw, clientId, root };
}

test("Kafka unreachable and the buffer refusing: Mosquitto drops the source's messages, and Ferry warns once, counts them and shows them in /api/status", {
  timeout: 120_000,
}, async () => {
  const hole = await blackHole();
  const { mosquitto, gw, clientId } = await setUp('max_queued_messages 10', `to: [{kafka: {brokers: "${hole.address}", topic: t}}]\nbuffer: {maxMessages: 50, overflow: refuse}\n`);
  const publisher = await connectAsync(mosquitto.url, { clientId: randomName('pub-'), reconnectPeriod: 0 });
  const publish = (from: number, count: number) =>
    Promise.all(Array.from({ length: count }, (_, i) => publisher.publishAsync(`plant/a/${from + i}`, String(from + i), { qos: 1 })));
  try {
    // Paced so that Mosquitto's queue never overflows: the buffer takes 50, then refuses, and
    // Ferry holds the next 10 unacknowledged.
    for (let n = 0; n < 60; n += 10) {
      await publish(n, 10);
      await sleep(200);
    }
    await eventually(async () => assert.equal((await status(gw)).counters['mqtt.client.behind{bridge=ext}'], 1, 'the lag episode counted'), { timeoutMs: 20_000 });
    assert.equal((await status(gw)).bridges[0]?.source?.brokerDropped, 0, 'nothing dropped yet');
    // Mosquitto acknowledges all of these to the publisher, sends Ferry 10 more (its in-flight
    // window of 20), queues 10 and drops the rest.
    await publish(60, 200);
    const counters = await eventually(
      async () => {
        const { counters } = await status(gw);
        assert.ok((counters['mqtt.client.broker_drops{bridge=ext,ferry=behind}'] ?? 0) > 0, 'broker drops counted while behind');
        assert.ok((counters['mqtt.client.broker_dropping{bridge=ext}'] ?? 0) >= 1, "the broker's notice naming this client counted");
        return counters;
      },
      { timeoutMs: 30_000 },
    );
    assert.equal(counters['mqtt.client.broker_drops{bridge=ext,ferry=keeping_up}'], undefined, 'none put down to other clients');
    // 260 published: 50 stored, 20 in flight to Ferry, 10 queued; the rest dropped. Mosquitto
    // reports its drops as it makes them, so the count is waited for, not read once.
    const source = await eventually(
      async () => {
        const found = (await status(gw)).bridges.find((b) => b.name === 'ext')?.source;
        assert.ok(found !== undefined);
        assert.ok(found.brokerDropped >= 260 - 50 - 20 - 10 - 20, `dropped ${found.brokerDropped}`);
        return found;
      },
      { timeoutMs: 30_000 },
    );
    assert.ok(source.brokerDroppedWhileBehind > 0 && source.brokerDroppedWhileBehind === source.brokerDropped, JSON.stringify(source));
    assert.ok(source.droppingForThisClient >= 1);
    assert.equal(source.brokerLog, 'watching');
    assert.ok((source.behindForMs ?? 0) > 0, 'still behind: Kafka is still unreachable');

    const warnings = messages(gw).filter((m) => m.level === WARN);
    const dropWarnings = warnings.filter((m) => /^the external broker dropped \d+ message\(s\) while this source was behind/.test(m.msg));
    assert.equal(dropWarnings.length, 1, `one warning for the episode: ${JSON.stringify(dropWarnings)}`);
    assert.equal(warnings.filter((m) => m.msg.startsWith(`the external broker says it is dropping messages for ${clientId}`)).length, 1);
    assert.equal(warnings.filter((m) => m.msg.startsWith('this source has not kept up with the external broker')).length, 1);
  } finally {
    await publisher.endAsync(true);
    gw.child.kill('SIGTERM');
    await gw.exited;
    hole.close();
    await mosquitto.stop('SIGKILL');
  }
});

test('a load Ferry keeps up with: every message arrives, and no drop or lag is warned about or counted', { timeout: 120_000 }, async () => {
  const { mosquitto, gw, root } = await setUp('max_queued_messages 1000', 'to: [{history: {keep: 100000}}]\nbuffer: {overflow: drop-oldest}\n');
  const publisher = await connectAsync(mosquitto.url, { clientId: randomName('pub-'), reconnectPeriod: 0 });
  const count = 1000;
  try {
    // About 400 messages a second, in bursts of 20.
    for (let n = 0; n < count; n += 20) {
      await Promise.all(Array.from({ length: 20 }, (_, i) => publisher.publishAsync(`plant/b/${n + i}`, String(n + i), { qos: 1 })));
      await sleep(50);
    }
    await eventually(
      () => {
        const reader = new HistoryReader(join(root, 'data'));
        try {
          assert.equal(new Set(reader.latest({ bridge: 'ext', limit: 100_000 }).map((r) => r.topic)).size, count);
        } finally {
          reader.close();
        }
      },
      { timeoutMs: 30_000 },
    );
    // Two more of the broker's counter readings after the last message.
    await sleep(2_500);
    const { counters, bridges } = await status(gw);
    const source = bridges.find((b) => b.name === 'ext')?.source;
    assert.equal(source?.brokerDropCounter, 'watching', 'the drop counter was read');
    assert.equal(source?.brokerDropped, 0);
    assert.equal(source?.droppingForThisClient, 0);
    assert.equal(source?.behindForMs, undefined);
    for (const name of Object.keys(counters)) assert.doesNotMatch(name, /^mqtt\.client\.(broker_drops|broker_dropping|behind)\{/);
    const warnings = messages(gw).filter((m) => m.level >= WARN && /external broker|kept up/.test(m.msg));
    assert.deepEqual(warnings, []);
  } finally {
    await publisher.endAsync(true);
    gw.child.kill('SIGTERM');
    await gw.exited;
    await mosquitto.stop('SIGKILL');
  }
});
