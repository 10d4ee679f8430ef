// Kafka down for 30 s in the middle of a stream: devices keep publishing QoS 1 and keep being
// acknowledged (the buffer holds their messages), the sink retries for ever, and once the same
// broker is back every acknowledged message reaches Kafka, in each device's order. Runs its own
// Kafka (the shared one cannot be stopped), halted and started again on the same port and data.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { fetchStatus, pendingOf } from '../harness/crashing-gateway.ts';
import { LoadPacer, startFleet } from '../harness/devices.ts';
import { startFerry } from '../harness/ferry-process.ts';
import { startKafka } from '../harness/kafka.ts';
import { readTopic } from '../harness/kafka-read.ts';
import { checkStreams } from '../harness/sequence-check.ts';
import { randomName } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';

const DEVICES = 8;
const TOTAL = 8_000;
/** Unacknowledged QoS 1 messages per device. */
const WINDOW = 10;
/** The load is released in steps: STEP first sends every TICK_MS (about 200 messages a second). */
const STEP = 50;
const TICK_MS = 250;
const OUTAGE_MS = 30_000;
const BRIDGE = 'telemetry-to-kafka';

const dirs = tempDirs('ferry-e2e-outage-');

test(`Kafka stopped for ${OUTAGE_MS / 1000} s mid-stream: devices stay acknowledged, and every acknowledged message arrives in device order`, { timeout: 300_000 }, async (t) => {
  const kafka = await startKafka();
  t.after(() => kafka.stop());
  const topic = randomName('ferry-e2e-outage-');
  const root = dirs();
  mkdirSync(join(root, 'bridges'), { recursive: true });
  writeFileSync(join(root, 'gateway.yaml'), 'mqtt: {allowAnonymous: loopback}\nbridges: [bridges]\ndevices: []\n');
  writeFileSync(
    join(root, 'bridges', 'kafka.yaml'),
    // A short retryMaxMs so the drain starts soon after Kafka is back; the producer gives up an
    // attempt quickly and the buffer's backoff takes over.
    `name: ${BRIDGE}\nfrom: {mqtt: {topics: ["devices/+/telemetry/#"]}}\nto:\n  - kafka: {brokers: "${kafka.bootstrap}", topic: ${topic}, retries: 2, connectionTimeoutMs: 1000, requestTimeoutMs: 5000}\nbuffer: {retryMaxMs: 2000}\n`,
  );
  const gw = await startFerry(['--config', join(root, 'gateway.yaml'), '--data-dir', join(root, 'data')]);
  t.after(() => {
    gw.child.kill('SIGKILL');
  });

  const pacer = new LoadPacer(0);
  const fleet = startFleet({ url: gw.mqttUrl, devices: DEVICES, total: TOTAL, window: WINDOW, clientIdPrefix: 'outage-dev-', pacer });
  let released = 0;
  const release = setInterval(() => pacer.setLimit((released = Math.min(TOTAL, released + STEP))), TICK_MS);
  try {
    // Kafka goes down once a sixth of the stream was acknowledged (and so written or buffered).
    while (fleet.acknowledged() < TOTAL / 6) await sleep(50);
    await kafka.halt();
    const ackedAtHalt = fleet.acknowledged();
    await sleep(OUTAGE_MS);
    const ackedDuringOutage = fleet.acknowledged() - ackedAtHalt;
    const during = await fetchStatus(gw.adminUrl);
    await kafka.start();

    await fleet.done;
    let pending = -1;
    for (let i = 0; i < 1200 && pending !== 0; i++) {
      pending = pendingOf(await fetchStatus(gw.adminUrl), BRIDGE);
      if (pending !== 0) await sleep(100);
    }
    assert.equal(pending, 0, 'the backlog did not drain within 120 s of the restart');
    const after = await fetchStatus(gw.adminUrl);

    const report = checkStreams(await readTopic([kafka.bootstrap], topic, 60_000), fleet.devices);
    const retries = Object.entries(after.counters)
      .filter(([k]) => k.startsWith('buffer.retries'))
      .reduce((n, [, v]) => n + v, 0);
    t.diagnostic(
      `acked ${fleet.acknowledged()}/${TOTAL}; ${ackedDuringOutage} acknowledged while Kafka was down (buffered then: ${pendingOf(during, BRIDGE)}); ` +
        `${retries} write retries; ${report.records} records, ${report.duplicates} duplicates (${report.redelivered} redelivered, ${report.republished} republished)`,
    );
    assert.ok(ackedDuringOutage > 0, 'no device was acknowledged while Kafka was down');
    assert.ok(pendingOf(during, BRIDGE) > 0, 'nothing was held in the buffer while Kafka was down');
    assert.ok(retries > 0, 'the sink never retried: Kafka was not really down');
    assert.deepEqual(report.missing, []);
    assert.deepEqual(report.violations, []);
    assert.deepEqual(report.malformed, []);
    assert.equal(report.distinct, TOTAL);
  } finally {
    clearInterval(release);
    pacer.stop();
    await fleet.close();
    gw.child.kill('SIGTERM');
    await gw.exited;
  }
});
