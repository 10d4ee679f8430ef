import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { ferry, startFerry } from '../harness/ferry-process.ts';
import { freePorts } from '../harness/net.ts';
import { tempDirs } from '../harness/temp.ts';

const dataDir = tempDirs('ferry-e2e-simulate-');
const PROFILE = 'devices/temperature-sensor.yaml';

interface Summary {
  devices: number;
  connected: number;
  sent: number;
  acked: number;
  failed: number;
  latencyMs: { p50: number; p90: number; p99: number; max: number } | null;
  connectionErrors: number;
}

test('simulate: 5 devices publish 200 QoS 1 messages, all acknowledged and kept in history with the profile fields', async () => {
  const dir = dataDir();
  const gw = await startFerry(['--config', 'config/gateway.yaml', '--data-dir', dir], { KAFKA_BROKERS: '' });
  try {
    const run = await ferry(['simulate', '--profile', PROFILE, '--url', gw.mqttUrl, '--devices', '5', '--count', '200', '--qos', '1', '--json']);
    assert.equal(run.code, 0, run.stderr);
    const summary = JSON.parse(run.stdout) as Summary;
    assert.deepEqual(
      { devices: summary.devices, connected: summary.connected, sent: summary.sent, acked: summary.acked, failed: summary.failed, connectionErrors: summary.connectionErrors },
      { devices: 5, connected: 5, sent: 200, acked: 200, failed: 0, connectionErrors: 0 },
    );
    assert.ok(summary.latencyMs !== null, 'QoS 1 has latencies');
    const { p50, p90, p99, max } = summary.latencyMs;
    assert.ok(p50 > 0 && p50 <= p90 && p90 <= p99 && p99 <= max, JSON.stringify(summary.latencyMs));

    // Acknowledged means buffered; the history sink writes its copy a moment later.
    let rows: { clientId: string; topic: string; payload: string }[] = [];
    for (let i = 0; i < 50 && rows.length < 200; i++) {
      if (i > 0) await sleep(100);
      const history = await ferry(['history', '--data-dir', dir, '--json', '-n', '1000']);
      assert.equal(history.code, 0, history.stderr);
      rows = history.stdout
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as (typeof rows)[number]);
    }
    assert.equal(rows.length, 200);
    assert.deepEqual([...new Set(rows.map((r) => r.clientId))].sort(), ['sensor-1', 'sensor-2', 'sensor-3', 'sensor-4', 'sensor-5']);
    for (const row of rows) {
      assert.equal(row.topic, `devices/${row.clientId}/telemetry/climate`);
      const payload = JSON.parse(row.payload) as Record<string, number>;
      assert.deepEqual(Object.keys(payload).sort(), ['celsius', 'humidity', 'seq', 'ts']);
      assert.ok(payload['celsius']! >= -10 && payload['celsius']! <= 40, row.payload);
      assert.ok(payload['humidity']! >= 10 && payload['humidity']! <= 95, row.payload);
    }

    // The same as MQTT 5 devices, at QoS 2.
    const v5 = await ferry(['simulate', '--profile', PROFILE, '--url', gw.mqttUrl, '--devices', '3', '--count', '90', '--qos', '2', '--mqtt', '5', '--json']);
    assert.equal(v5.code, 0, v5.stderr);
    const v5Summary = JSON.parse(v5.stdout) as Summary;
    assert.deepEqual([v5Summary.connected, v5Summary.acked, v5Summary.failed], [3, 90, 0]);
  } finally {
    gw.child.kill('SIGTERM');
    await gw.exited;
  }
});

test('simulate: an unreachable broker is one line naming --url, exit 1', async () => {
  const [port] = await freePorts(1);
  const run = await ferry(['simulate', '--profile', PROFILE, '--url', `mqtt://127.0.0.1:${port}`, '--count', '10']);
  assert.equal(run.code, 1);
  assert.equal(run.stdout, '');
  const lines = run.stderr.trim().split('\n');
  assert.equal(lines.length, 1, run.stderr);
  assert.match(lines[0]!, /--url/);
  assert.match(lines[0]!, new RegExp(`127\\.0\\.0\\.1:${port}`));
});

test('simulate: a missing profile, an invalid profile and a bad option value each exit 1 with the reason', async () => {
  const missing = await ferry(['simulate', '--profile', 'devices/no-such-device.yaml', '--count', '10']);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /profile not found: devices\/no-such-device\.yaml/);

  // A gateway config is not a device profile: every problem, positioned, as `ferry validate` prints them.
  const invalid = await ferry(['simulate', '--profile', 'config/gateway.yaml', '--count', '10']);
  assert.equal(invalid.code, 1);
  assert.match(invalid.stderr, /invalid profile \(--profile\)/);
  assert.match(invalid.stderr, /config\/gateway\.yaml:\d+:\d+: mqtt: unknown key 'mqtt'/);

  const badQos = await ferry(['simulate', '--profile', PROFILE, '--qos', '3']);
  assert.equal(badQos.code, 1);
  assert.match(badQos.stderr, /--qos: expected 0, 1 or 2, got '3'/);

  const badVersion = await ferry(['simulate', '--profile', PROFILE, '--mqtt', '4']);
  assert.equal(badVersion.code, 1);
  assert.match(badVersion.stderr, /--mqtt: expected 3\.1\.1 or 5, got '4'/);
});
