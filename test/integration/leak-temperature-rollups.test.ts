// The example bridge bridges/temperature-rollups.ts groups readings per device, each group with a
// bufferTime window (a Subject and a repeating timer). A gateway sees new device ids for years
// (devices replaced, ids with a serial number): the group of a device that went quiet has to be
// forgotten, or the gateway keeps a timer and its objects for every device id it ever saw.
// Measured by the process' active timers: one per group that is still open.
import '../harness/kafkajs-patched.ts';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import mqtt from 'mqtt';
import { startGateway } from '../../src/lib/gateway.ts';
import { eventually } from '../harness/eventually.ts';
import { REPO_ROOT } from '../harness/ferry-process.ts';
import { randomName, requireService } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-leak-rollups-');
const WINDOW_MS = 200;
const ROUNDS = 3;
const DEVICES_PER_ROUND = 100;

const activeTimers = (): number => process.getActiveResourcesInfo().filter((kind) => kind === 'Timeout').length;

test('temperature-rollups forgets the group of a device gone quiet: timers stay bounded as new device ids keep coming', { timeout: 120_000 }, async () => {
  const brokers = await requireService('kafka');
  const env = { KAFKA_BROKERS: brokers.join(','), FERRY_ROLLUP_WINDOW_MS: String(WINDOW_MS), FERRY_ROLLUPS_TOPIC: randomName('ferry-leak-rollups-') };
  const saved = Object.fromEntries(Object.keys(env).map((key) => [key, process.env[key]]));
  Object.assign(process.env, env);
  const gateway = await startGateway({
    config: { mqtt: { host: '127.0.0.1', allowAnonymous: 'loopback' }, log: { level: 'silent' }, bridges: [join(REPO_ROOT, 'bridges', 'temperature-rollups.ts')], devices: [] },
    baseDir: tempDir(),
    overrides: { mqttPort: 0, adminPort: 0 },
  });
  let client: mqtt.MqttClient | undefined;
  try {
    await gateway.ready;
    const device = await mqtt.connectAsync(`mqtt://127.0.0.1:${gateway.mqttPort}`, { clientId: randomName('leak-rollups-'), reconnectPeriod: 0 });
    client = device;
    const rollups = () => gateway.status().bridges.find((b) => b.name === 'temperature-rollups');
    const settled = async (what: string) =>
      eventually(
        () => {
          const bridge = rollups();
          assert.equal(bridge?.state, 'running', what);
          assert.equal(bridge?.handler?.unacked, 0, `${what}: readings not acked yet`);
        },
        { timeoutMs: 30_000 },
      );
    // One device first, so that the timers of Kafka's producer and the buffer are running.
    await device.publishAsync('devices/warm-up/telemetry/climate', JSON.stringify({ celsius: 20 }), { qos: 1 });
    await settled('warm-up');
    await new Promise((resolve) => setTimeout(resolve, WINDOW_MS * 10));
    const baseline = activeTimers();

    for (let round = 0; round < ROUNDS; round++) {
      for (let i = 0; i < DEVICES_PER_ROUND; i++) {
        await device.publishAsync(`devices/r${round}-d${i}/telemetry/climate`, JSON.stringify({ celsius: 15 + i / 10 }), { qos: 1 });
      }
      await settled(`round ${round}`);
    }
    const written = rollups()?.sinks.find((s) => s.name === 'rollups')?.written ?? 0;
    assert.ok(written >= ROUNDS * DEVICES_PER_ROUND, `every reading went into a rollup written to Kafka (${written})`);

    // The devices are quiet now: their groups end, and with them their windows' timers.
    const devices = ROUNDS * DEVICES_PER_ROUND;
    await eventually(
      () => {
        const extra = activeTimers() - baseline;
        assert.ok(extra < devices / 10, `${extra} more active timers than before ${devices} devices sent a reading each and went quiet`);
      },
      { timeoutMs: WINDOW_MS * 50, intervalMs: WINDOW_MS },
    );
  } finally {
    await client?.endAsync();
    await gateway.stop();
    for (const [key, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  }
});
