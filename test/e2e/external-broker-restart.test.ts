import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { connectAsync, type MqttClient } from 'mqtt';
import { HistoryReader } from '../../src/sqlite/history-store.ts';
import { startFerry } from '../harness/ferry-process.ts';
import { startPrivateMosquitto } from '../harness/private-mosquitto.ts';
import { randomName } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';
import { eventually } from '../harness/eventually.ts';

const tempDir = tempDirs('ferry-ext-restart-');

const PUBLISHERS = 3;
const PER_PUBLISHER = 800;
const WINDOW = 20;

/**
 * Publishes `count` numbered QoS 1 messages with at most WINDOW unacknowledged, through
 * broker restarts (mqtt.js resends what was in flight after it reconnects). Resolves with the
 * numbers the broker acknowledged.
 */
async function publishNumbered(client: MqttClient, topic: string, count: number, progress: () => void): Promise<Set<number>> {
  const acked = new Set<number>();
  let next = 0;
  await new Promise<void>((resolve) => {
    let inFlight = 0;
    let settled = 0;
    const pump = () => {
      while (inFlight < WINDOW && next < count) {
        const n = next++;
        inFlight += 1;
        client.publish(topic, JSON.stringify({ n }), { qos: 1 }, (error) => {
          inFlight -= 1;
          settled += 1;
          if (error === undefined || error === null) {
            acked.add(n);
            progress();
          }
          if (settled === count) resolve();
          else pump();
        });
      }
    };
    pump();
  });
  return acked;
}

test('mqttClient source: every message Mosquitto acknowledged reaches the history across a Mosquitto restart (SIGTERM) mid-stream', { timeout: 300_000 }, async () => {
  const root = tempDir();
  mkdirSync(join(root, 'mosquitto'));
  const mosquitto = await startPrivateMosquitto(join(root, 'mosquitto'));
  const clientId = randomName('ferry-ext-');
  mkdirSync(join(root, 'bridges'));
  mkdirSync(join(root, 'devices'));
  writeFileSync(join(root, 'gateway.yaml'), 'gateway: {dataDir: data}\nmqtt: {host: 127.0.0.1}\nbridges: [bridges]\ndevices: [devices]\n');
  writeFileSync(
    join(root, 'bridges', 'external.yaml'),
    `name: external\nfrom: {mqttClient: {url: "${mosquitto.url}", clientId: ${clientId}, topics: ["ext/+/seq"], qos: 1, reconnectMinMs: 100, reconnectMaxMs: 1000}}\nto: [{history: {keep: 1000000}}]\n`,
  );
  const gw = await startFerry(['--config', join(root, 'gateway.yaml')]);
  const publishers: MqttClient[] = [];
  try {
    // The source's first connection creates its persistent session; publish after it subscribed.
    const subscribed = () => mosquitto.log().includes(`${clientId} 1 ext/+/seq`);
    await eventually(() => assert.ok(subscribed(), 'waiting for: subscribed()'), { timeoutMs: 10000 });
    assert.ok(subscribed(), 'the source did not subscribe');

    for (let p = 0; p < PUBLISHERS; p++) {
      publishers.push(await connectAsync(mosquitto.url, { clientId: `pub-${p}-${clientId}`, reconnectPeriod: 200, connectTimeout: 5000 }));
    }
    let ackedSoFar = 0;
    let restart: Promise<void> | undefined;
    const progress = () => {
      ackedSoFar += 1;
      if (restart === undefined && ackedSoFar >= (PUBLISHERS * PER_PUBLISHER) / 3) {
        restart = (async () => {
          await mosquitto.stop('SIGTERM');
          await sleep(300);
          await mosquitto.start();
        })();
      }
    };
    const acked = await Promise.all(publishers.map((client, p) => publishNumbered(client, `ext/p${p}/seq`, PER_PUBLISHER, progress)));
    await restart;
    assert.ok(restart !== undefined, 'the broker was not restarted');
    const total = acked.reduce((n, s) => n + s.size, 0);

    // Wait until the history holds every acknowledged message (or stops growing).
    const read = () => {
      const reader = new HistoryReader(join(root, 'data'));
      try {
        return reader.latest({ bridge: 'external', limit: 10_000_000 });
      } finally {
        reader.close();
      }
    };
    let rows = read();
    const distinctOf = (rs: typeof rows) => new Set(rs.map((r) => `${r.topic} ${Buffer.from(r.payload).toString()}`)).size;
    for (let stable = 0, last = -1; stable < 100 && distinctOf(rows) < total; ) {
      await sleep(200);
      rows = read();
      const now = distinctOf(rows);
      stable = now === last ? stable + 1 : 0;
      last = now;
    }

    const missing: string[] = [];
    const order: string[] = [];
    let duplicates = 0;
    for (let p = 0; p < PUBLISHERS; p++) {
      const topic = `ext/p${p}/seq`;
      const seen = new Set<number>();
      let highest = -1;
      for (const row of rows.filter((r) => r.topic === topic)) {
        const { n } = JSON.parse(Buffer.from(row.payload).toString()) as { n: number };
        if (seen.has(n)) {
          duplicates += 1;
          continue;
        }
        seen.add(n);
        if (n < highest) order.push(`${topic}: ${n} after ${highest}`);
        highest = Math.max(highest, n);
      }
      for (const n of acked[p] as Set<number>) if (!seen.has(n)) missing.push(`${topic} #${n}`);
    }
    const report = `${total} acknowledged by Mosquitto, ${rows.length} rows in the history, ${duplicates} duplicates, ${missing.length} missing, ${order.length} out of order`;
    process.stderr.write(`[external broker restart] ${report}\n`);
    assert.deepEqual(missing.slice(0, 20), [], `${report}; missing: ${missing.slice(0, 20).join(', ')}`);
    assert.deepEqual(order.slice(0, 20), [], `${report}; out of order`);
  } finally {
    await Promise.all(publishers.map((c) => c.endAsync(true)));
    gw.child.kill('SIGTERM');
    await gw.exited;
    await mosquitto.stop();
  }
});
