import { readdirSync } from 'node:fs';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { test } from 'node:test';
import { ferry, startFerry } from '../harness/ferry-process.ts';
import { mosquittoPub } from '../harness/mosquitto.ts';
import { tempDirs } from '../harness/temp.ts';

const dataDir = tempDirs('ferry-e2e-');

test('the embedded default: a QoS 1 mosquitto_pub is acknowledged, kept in history, counted; SIGTERM exits 0', async (t) => {
  const dir = dataDir();
  const gw = await startFerry(['--config', 'config/gateway.yaml', '--data-dir', dir], { KAFKA_BROKERS: '' });
  try {
    // Startup time is measured by `npm run bench`, not asserted here (the machine's load decides it).
    t.diagnostic(`ready after ${Math.round(gw.readyAfterMs)} ms`);
    assert.equal((await fetch(`${gw.adminUrl}/healthz`)).status, 200);
    assert.equal((await fetch(`${gw.adminUrl}/readyz`)).status, 200);

    for (const qos of [1, 0] as const) {
      const pub = await mosquittoPub(gw.mqttUrl, 'devices/sensor-1/telemetry/climate', JSON.stringify({ celsius: 21.5, qos }), { clientId: 'sensor-1', qos });
      assert.equal(pub.code, 0, pub.stderr);
    }
    const ignored = await mosquittoPub(gw.mqttUrl, 'other/topic', 'not telemetry', { clientId: 'sensor-2' });
    assert.equal(ignored.code, 0, ignored.stderr);

    // QoS 0 gets no acknowledgement, so its row may land a moment after mosquitto_pub exits.
    let rows: Record<string, unknown>[] = [];
    for (let i = 0; i < 20 && rows.length < 2; i++) {
      const history = await ferry(['history', '--data-dir', dir, '--json']);
      assert.equal(history.code, 0, history.stderr);
      rows = history.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    }
    assert.deepEqual(
      rows.map((r) => [r['clientId'], r['topic'], r['payload'], r['bridge']]),
      [
        ['sensor-1', 'devices/sensor-1/telemetry/climate', '{"celsius":21.5,"qos":1}', 'telemetry-history'],
        ['sensor-1', 'devices/sensor-1/telemetry/climate', '{"celsius":21.5,"qos":0}', 'telemetry-history'],
      ],
    );

    const status = (await (await fetch(`${gw.adminUrl}/api/status`)).json()) as {
      state: string;
      listeners: { protocol: string; port: number }[];
      bridges: { name: string; sinks: { written: number }[] }[];
      counters: Record<string, number>;
    };
    assert.equal(status.state, 'running');
    assert.deepEqual(
      status.listeners.map((l) => l.protocol),
      ['mqtt', 'http'],
    );
    assert.deepEqual(
      status.bridges.map((b) => [b.name, b.sinks[0]?.written]),
      [['telemetry-history', 2]],
    );
    assert.equal(status.counters['mqtt.messages.received{qos=1}'], 2);
    assert.equal(status.counters['mqtt.messages.received{qos=0}'], 1);

    const metrics = await fetch(`${gw.adminUrl}/metrics`);
    assert.equal(metrics.status, 200);
    assert.match(metrics.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const text = await metrics.text();
    for (const line of [
      'ferry_up 1',
      'ferry_mqtt_messages_received_total{qos="1"} 2',
      'ferry_mqtt_messages_received_total{qos="0"} 1',
      'ferry_buffer_pending{bridge="telemetry-history",sink="history"} 0',
      'ferry_buffer_state{state="ok"} 1',
    ]) {
      assert.ok(text.split('\n').includes(line), `${line} in\n${text}`);
    }
    assert.match(text, /^# TYPE ferry_mqtt_messages_received_total counter$/m);
  } finally {
    gw.child.kill('SIGTERM');
  }
  assert.equal(await gw.exited, 0);
  assert.ok(gw.logs.some((l) => l['msg'] === 'stopped'));
});

test('a taken MQTT port is refused with a message naming --mqtt-port', async () => {
  const blocker = createServer();
  blocker.listen(0, '127.0.0.1');
  await once(blocker, 'listening');
  const port = (blocker.address() as { port: number }).port;
  try {
    const result = await ferry(['run', '--config', 'config/gateway.yaml', '--data-dir', dataDir(), '--mqtt-port', String(port), '--admin-port', '0']);
    assert.equal(result.code, 1);
    assert.match(result.stderr, new RegExp(`MQTT port ${port} .* already in use.*--mqtt-port`));
    // The sinks never read the buffer before the broker listens: a start refused here has no
    // unconfirmed messages, and said it had ("sinks did not finish in time") before the error.
    assert.doesNotMatch(result.stdout + result.stderr, /did not finish in time/);
  } finally {
    blocker.close();
  }
});

test('ferry validate: exit 0 on the shipped config, 1 with positioned problems otherwise', async () => {
  const ok = await ferry(['validate', '--config', 'config/gateway.yaml']);
  assert.equal(ok.code, 0, ok.stderr);
  const shipped = readdirSync('bridges').filter((f) => /\.(ya?ml|ts)$/.test(f)).length;
  assert.match(ok.stdout, new RegExp(`ok \\(${shipped} bridges`));
  const missing = await ferry(['validate', '--config', 'nope.yaml']);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /config file not found: nope\.yaml/);
});

test('ferry config schema prints a JSON Schema for each file kind', async () => {
  for (const kind of ['gateway', 'bridge', 'device']) {
    const result = await ferry(['config', 'schema', '--kind', kind]);
    assert.equal(result.code, 0, result.stderr);
    const schema = JSON.parse(result.stdout) as { $schema: string; type: string };
    assert.match(schema.$schema, /json-schema\.org/);
    assert.equal(schema.type, 'object');
  }
});
