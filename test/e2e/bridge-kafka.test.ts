// A declarative MQTT-to-Kafka bridge run by the real CLI: topic, key and headers rendered from
// each message, checked with independent clients on both sides (mosquitto_pub, kcat); a
// message whose topic renders to an invalid Kafka topic, or one outside allowedTopics, ends in
// the dead letters with the reason while the others arrive.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fetchStatus, pendingOf } from '../harness/crashing-gateway.ts';
import { ferry, startFerry } from '../harness/ferry-process.ts';
import { kcatConsume } from '../harness/kcat.ts';
import { mosquittoPub } from '../harness/mosquitto.ts';
import { randomName, requireService } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';
import { until } from '../harness/eventually.ts';

const dirs = tempDirs('ferry-e2e-bridge-kafka-');
const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

const BRIDGE = `name: telemetry
from:
  mqtt:
    topics: [devices/+/telemetry/#]
to:
  - kafka:
      brokers: \${KAFKA_BROKERS}
      topic: \${TOPIC_PREFIX}.\${1}.telemetry
      allowedTopics: ["\${TOPIC_PREFIX}.pump-*.telemetry"]
      key: \${1}
      headers:
        site: \${payload.site}
        reading: \${#}
`;

/** Writes gateway.yaml and the bridge into a fresh directory; returns the gateway file. */
function configTree(root: string): string {
  mkdirSync(join(root, 'bridges'), { recursive: true });
  writeFileSync(join(root, 'gateway.yaml'), 'mqtt: {allowAnonymous: loopback}\nbridges: [bridges]\ndevices: []\n');
  writeFileSync(join(root, 'bridges', 'telemetry.yaml'), BRIDGE);
  return join(root, 'gateway.yaml');
}

async function untilDrained(adminUrl: string, bridge: string): Promise<void> {
  await until(`bridge '${bridge}' to have no message pending`, async () => (pendingOf(await fetchStatus(adminUrl), bridge) === 0 ? true : undefined), {
    timeoutMs: 60_000,
    intervalMs: 100,
  });
}

test('a templated Kafka bridge: rendered topics, keys and headers, exact payloads; an invalid rendered topic is dead-lettered with its reason', { timeout: 120_000 }, async () => {
  const brokers = await requireService('kafka');
  const prefix = randomName('ferry-e2e-bridge-');
  const root = dirs();
  const dataDir = join(root, 'data');
  const gw = await startFerry(['--config', configTree(root), '--data-dir', dataDir], { KAFKA_BROKERS: brokers.join(','), TOPIC_PREFIX: prefix });
  const sent = [
    { device: 'pump-1', topic: 'devices/pump-1/telemetry/pressure', payload: '{"site":"north","bar":2.5}' },
    { device: 'pump-2', topic: 'devices/pump-2/telemetry/flow/in', payload: '{"site":"south","lpm":12}' },
    { device: 'bad@pump', topic: 'devices/bad@pump/telemetry/pressure', payload: '{"site":"north","bar":1}' },
    // A valid topic, but not one the bridge allows.
    { device: 'valve-1', topic: 'devices/valve-1/telemetry/pressure', payload: '{"site":"north","bar":3}' },
    { device: 'pump-1', topic: 'devices/pump-1/telemetry/pressure', payload: '{"site":"north","bar":2.75}' },
    // An MQTT 5 device: its user properties travel as Kafka headers (here a W3C trace context).
    { device: 'pump-2', topic: 'devices/pump-2/telemetry/flow/out', payload: '{"site":"south","lpm":11.5}', userProperties: { traceparent: TRACEPARENT } },
  ];
  try {
    for (const m of sent) {
      const v5 = m.userProperties === undefined ? {} : { protocol: 'mqttv5' as const, userProperties: m.userProperties };
      const pub = await mosquittoPub(gw.mqttUrl, m.topic, m.payload, { qos: 1, clientId: m.device, ...v5 });
      assert.equal(pub.code, 0, pub.stderr);
    }
    await untilDrained(gw.adminUrl, 'telemetry');

    const read = async (device: string) => (await kcatConsume(brokers, `${prefix}.${device}.telemetry`)).map((m) => ({ ...m, headers: { ...m.headers } }));
    const [one, two] = [await read('pump-1'), await read('pump-2')];
    const expected = (i: number) => {
      const m = sent[i] as (typeof sent)[number];
      return {
        key: m.device,
        payload: m.payload,
        site: (JSON.parse(m.payload) as { site: string }).site,
        reading: m.topic.split('/').slice(3).join('/'),
        mqttTopic: m.topic,
      };
    };
    const seen = (records: typeof one) =>
      records.map((r) => ({ key: r.key, payload: r.payload, site: r.headers['site'], reading: r.headers['reading'], mqttTopic: r.headers['mqtt-topic'] }));
    assert.deepEqual(seen(one), [expected(0), expected(4)]);
    assert.deepEqual(seen(two), [expected(1), expected(5)]);
    assert.deepEqual(
      [...one, ...two].map((r) => r.headers['traceparent']),
      [undefined, undefined, undefined, TRACEPARENT],
    );
    const ids = [...one, ...two].map((r) => r.headers['ferry-id']);
    for (const id of ids) assert.match(id ?? '', /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    assert.equal(new Set(ids).size, 4);

    const status = await fetchStatus(gw.adminUrl);
    assert.equal(status.buffer.bridges.find((b) => b.bridge === 'telemetry')?.deadLetters, 2);
    assert.equal(status.counters['kafka.messages.rejected{bridge=telemetry}'], 2);
  } finally {
    gw.child.kill('SIGTERM');
  }
  assert.equal(await gw.exited, 0);

  const letters = await ferry(['buffer', 'export', '--data-dir', dataDir, '--dead-letters', '--bridge', 'telemetry']);
  assert.equal(letters.code, 0, letters.stderr);
  const dead = letters.stdout
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as { topic: string; reason: string; sink: string });
  assert.deepEqual(
    dead.map((d) => [d.topic, d.sink]),
    [
      ['devices/bad@pump/telemetry/pressure', 'kafka'],
      ['devices/valve-1/telemetry/pressure', 'kafka'],
    ],
  );
  assert.match(dead[0]?.reason ?? '', new RegExp(`topic '${prefix}\\.bad@pump\\.telemetry' .*is invalid: .*it has "@"`));
  assert.match(dead[1]?.reason ?? '', new RegExp(`topic '${prefix}\\.valve-1\\.telemetry' .*is not in allowedTopics`));
});
