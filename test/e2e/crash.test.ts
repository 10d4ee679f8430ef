// The buffer's promise under crashes: a device's PUBACK means its message reaches Kafka, whatever
// happens to the gateway afterwards. 50 simulated devices publish 100,000 QoS 1 messages while
// the gateway is killed with SIGKILL at random moments (at least 20 times) and started again on
// the same MQTT port and data directory; then every acknowledged message must be in Kafka, in
// each device's order.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { CrashingGateway, fetchStatus, integrityCheck, pendingOf } from '../harness/crashing-gateway.ts';
import { type Fleet, LoadPacer, startFleet } from '../harness/devices.ts';
import { readTopic } from '../harness/kafka-read.ts';
import { freePorts } from '../harness/net.ts';
import { checkStreams } from '../harness/sequence-check.ts';
import { randomName, requireService } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';

const DEVICES = 50;
const TOTAL = 100_000;
/** In-flight QoS 1 messages per device (Mosquitto's max_inflight_messages is 20). */
const WINDOW = 20;
const MIN_KILLS = 20;
/** Each incarnation is killed this long after it became ready... */
const UPTIME_MS = { min: 500, max: 3000 };
/** ...when this fraction (random in the range) of the messages it may still take were acknowledged. */
const KILL_AT_FRACTION = { min: 0.1, max: 0.9 };
/** No new acknowledgement for this long while the gateway runs is a hang. */
const STALL_MS = 30_000;
const DRAIN_TIMEOUT_MS = 120_000;
const BRIDGE = 'telemetry-to-kafka';

const dataDirs = tempDirs('ferry-e2e-crash-');

test(`${TOTAL} acknowledged QoS 1 messages of ${DEVICES} devices all reach Kafka in device order across at least ${MIN_KILLS} SIGKILLs of the gateway`, {
  timeout: 240_000,
}, async (t) => {
  const brokers = await requireService('kafka');
  const topic = randomName('ferry-e2e-crash-');
  const dataDir = dataDirs();
  const bufferDb = join(dataDir, 'buffer.db');
  const [mqttPort] = (await freePorts(1)) as [number];
  const began = performance.now();
  const gateway = await CrashingGateway.start(['--config', 'config/gateway.yaml', '--data-dir', dataDir, '--mqtt-port', String(mqttPort)], {
    KAFKA_BROKERS: brokers.join(','),
    FERRY_KAFKA_TOPIC: topic,
  });

  // Devices publish at full speed within a budget: before the k-th kill at most
  // k/(MIN_KILLS+1) of the messages may have been started, so publishing spans every kill.
  // Each incarnation is killed when a random fraction of what it may still take has been
  // acknowledged (kept within UPTIME_MS), so that every kill cuts into a running load,
  // whatever the machine's speed. The last incarnation publishes the rest and drains.
  const pacer = new LoadPacer(0);
  const budget = (kills: number) => Math.floor((TOTAL * (kills + 1)) / (MIN_KILLS + 1));

  let fleet: Fleet | undefined;
  try {
    fleet = startFleet({ url: `mqtt://127.0.0.1:${mqttPort}`, devices: DEVICES, total: TOTAL, window: WINDOW, clientIdPrefix: 'crash-dev-', reconnectPeriodMs: 200, pacer });
    let allAcked = false;
    void fleet.done.then(() => (allAcked = true));
    const inFlightAtKill: number[] = [];
    const uptimes: number[] = [];
    let progress = { acked: 0, at: performance.now() };
    const checkProgress = async () => {
      const acked = fleet?.acknowledged() ?? 0;
      if (acked > progress.acked) progress = { acked, at: performance.now() };
      else if (performance.now() - progress.at > STALL_MS) {
        const status = await fetchStatus(gateway.current.adminUrl).catch((error: unknown) => String(error));
        assert.fail(`no new PUBACK for ${STALL_MS} ms at ${acked}/${TOTAL} after ${gateway.kills} kills; in flight ${fleet?.inFlight()}; status ${JSON.stringify(status)}`);
      }
    };

    while (gateway.kills < MIN_KILLS) {
      const limit = budget(gateway.kills);
      pacer.setLimit(limit);
      const from = fleet.acknowledged();
      const killAt = from + between(KILL_AT_FRACTION) * (limit - from);
      const upSince = performance.now();
      await sleep(UPTIME_MS.min);
      while (fleet.acknowledged() < killAt && performance.now() - upSince < UPTIME_MS.max) await sleep(5);
      await checkProgress();

      inFlightAtKill.push(fleet.inFlight());
      uptimes.push(performance.now() - upSince);
      await gateway.kill();
      const gw = await gateway.restart();
      // The committed log must be sound after every crash, and must not have been replaced:
      // a corrupt buffer would be moved aside at startup, and the check would then pass on an
      // empty database.
      assert.equal(integrityCheck(bufferDb), 'ok', `integrity_check after kill ${gateway.kills}`);
      const status = await fetchStatus(gw.adminUrl);
      assert.equal(status.buffer.movedAside, undefined, `after kill ${gateway.kills} the buffer was found corrupt and moved aside`);
    }
    pacer.setLimit(TOTAL);
    while (!allAcked) {
      await Promise.race([sleep(1000), fleet.done]);
      await checkProgress();
    }
    const publishedAfterMs = performance.now() - began;
    for (const device of fleet.devices) assert.equal(device.acked.size, device.quota, `${device.clientId} acknowledged`);
    t.diagnostic(
      `all ${TOTAL} acknowledged after ${(publishedAfterMs / 1000).toFixed(1)} s and ${gateway.kills} kills ` +
        `(kills with messages in flight ${inFlightAtKill.filter((n) => n > 0).length}/${inFlightAtKill.length}, ` +
        `in flight at a kill median ${median(inFlightAtKill)}, max ${Math.max(...inFlightAtKill)}; ` +
        `uptime before a kill median ${Math.round(median(uptimes))} ms, min ${Math.round(Math.min(...uptimes))}, max ${Math.round(Math.max(...uptimes))}; ` +
        `restarts ready in median ${Math.round(median(gateway.readyTimes))} ms); ` +
        `publishes ${sum(fleet.devices.map((d) => d.published))}, re-publishes ${sum(fleet.devices.map((d) => d.republished))}; ` +
        `in flight at each kill: ${inFlightAtKill.join(' ')}`,
    );

    // Drain: the Kafka sink confirms everything still buffered.
    const deadline = performance.now() + DRAIN_TIMEOUT_MS;
    let pending = pendingOf(await fetchStatus(gateway.current.adminUrl), BRIDGE);
    while (pending !== 0) {
      assert.ok(performance.now() < deadline, `${pending} messages still pending for ${BRIDGE} after ${DRAIN_TIMEOUT_MS} ms`);
      await sleep(200);
      pending = pendingOf(await fetchStatus(gateway.current.adminUrl), BRIDGE);
    }
    const status = await fetchStatus(gateway.current.adminUrl);
    const bridge = status.buffer.bridges.find((b) => b.bridge === BRIDGE);
    assert.equal(bridge?.deadLetters, 0, 'dead letters');

    const records = await readTopic(brokers, topic, 120_000);
    const report = checkStreams(records, fleet.devices);
    const duration = (performance.now() - began) / 1000;
    t.diagnostic(
      `messages ${TOTAL}, kills ${gateway.kills}, duplicates ${report.duplicates} ` +
        `(${report.redelivered} sent again by the gateway, ${report.republished} published again by devices), ` +
        `records ${report.records}, duration ${duration.toFixed(1)} s`,
    );
    const problems = gateway.problems();
    if (problems.length > 0) {
      const kinds = new Map<string, number>();
      for (const { line } of problems) kinds.set(String(line['msg']), (kinds.get(String(line['msg'])) ?? 0) + 1);
      t.diagnostic(`gateway warnings and errors: ${[...kinds].map(([msg, n]) => `${n}x "${msg}"`).join('; ')}`);
    }

    assert.deepEqual(report.malformed.slice(0, 20), [], 'records that do not belong');
    assert.deepEqual(report.missing.slice(0, 20), [], `${report.missing.length} acknowledged messages missing from Kafka (first 20 shown)`);
    // Per-device order. Within one connection a device sends strictly increasing seqs; after
    // a lost connection it first publishes again, in order, every seq it has no PUBACK for
    // (some of which the gateway may already have committed), then new seqs. The gateway
    // appends one connection's messages to the buffer in arrival order and commits them in
    // that order, so what a crash leaves committed is a prefix of what the connection
    // delivered, and a later connection's messages come after it in the buffer. The Kafka
    // sink writes the buffer in order (replay: fifo, the default, which this bridge uses) and,
    // after a restart, writes again from its cursor, which only repeats messages (an old
    // incarnation's produce landing late repeats messages too). Hence the invariant, for
    // each device (Kafka key) in offset order: a record whose seq was not seen before has a
    // seq greater than every seq seen before; with every seq present, first occurrences
    // read 0, 1, 2, ... A record repeating a seq is a duplicate and may come after later
    // seqs: the same buffered message sent again (same ferry-id), or the device's re-publish
    // of a message committed before its PUBACK was lost (new ferry-id). QoS 1 is
    // at-least-once: duplicates are allowed and counted; a lost or reordered first
    // occurrence is a failure. (This holds for crashes of the gateway; Kafka itself is not
    // failed here.)
    assert.deepEqual(report.violations.slice(0, 20), [], `${report.violations.length} order violations (first 20 shown)`);
    assert.equal(report.distinct, TOTAL, 'distinct (device, seq) in Kafka');

    assert.equal(await gateway.stop(), 0, 'exit code after SIGTERM');
  } finally {
    pacer.stop();
    gateway.forceKill();
    await fleet?.close();
  }
});

function between(range: { min: number; max: number }): number {
  return range.min + Math.random() * (range.max - range.min);
}

function median(values: readonly number[]): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] as number;
}

function sum(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0);
}
