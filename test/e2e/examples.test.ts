import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { test } from 'node:test';
import { ensureBuilt } from '../harness/build.ts';
import { eventually } from '../harness/eventually.ts';
import { REPO_ROOT } from '../harness/ferry-process.ts';
import { readTopic } from '../harness/kafka-read.ts';
import { mosquittoPub } from '../harness/mosquitto.ts';
import { randomName, requireService } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-examples-');
const example = (file: string) => join(REPO_ROOT, 'examples', file);

test('examples/gateway.test.ts: a gateway started programmatically keeps a device message in its history', () => {
  ensureBuilt();
  // Without NODE_TEST_CONTEXT, which would make the child report to this runner instead of printing.
  const { NODE_TEST_CONTEXT: _, ...env } = process.env;
  const run = spawnSync(process.execPath, ['--test', '--test-reporter=spec', example('gateway.test.ts')], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 120_000, env });
  assert.equal(run.status, 0, `${run.stdout}${run.stderr}`);
  assert.match(run.stdout, /✔ a device message is kept in the history/);
});

test('examples/publish-commands.ts: each command is in Kafka, keyed by device, when the script exits', async () => {
  ensureBuilt();
  const brokers = await requireService('kafka');
  const topic = randomName('ferry-example-commands-');
  const run = spawnSync(process.execPath, [example('publish-commands.ts'), 'sensor-1', 'sensor-2'], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
    timeout: 120_000,
    env: { ...process.env, KAFKA_BROKERS: brokers.join(','), COMMANDS_TOPIC: topic },
  });
  assert.equal(run.status, 0, run.stderr);
  assert.equal(run.stdout, 'sent reboot to sensor-1\nsent reboot to sensor-2\n');
  const records = await readTopic(brokers, topic);
  assert.deepEqual(
    records.map((r) => [r.key, (JSON.parse(String(r.value)) as { command: string }).command]),
    [
      ['sensor-1', 'reboot'],
      ['sensor-2', 'reboot'],
    ],
  );
});

test('examples/mqtt-to-kafka.ts: messages of the external broker reach Kafka through the durable buffer; SIGTERM ends the script', async () => {
  ensureBuilt();
  const [brokers, mqttUrl] = [await requireService('kafka'), await requireService('mqtt')];
  const name = randomName('ferry-example-');
  const child = spawn(process.execPath, [example('mqtt-to-kafka.ts')], {
    cwd: REPO_ROOT,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, MQTT_URL: mqttUrl, KAFKA_BROKERS: brokers.join(','), TOPICS: `${name}/#`, KAFKA_TOPIC: name, BUFFER_DIR: tempDir(), CLIENT_ID: name },
  });
  const killGroup = () => {
    try {
      process.kill(-(child.pid as number), 'SIGKILL');
    } catch {}
  };
  process.once('exit', killGroup);
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  const exited = once(child, 'exit');
  try {
    // Until its subscription is in place, the broker has nobody to give a message to: publish
    // until one arrives, then the ones that must all arrive.
    await eventually(
      async () => {
        const pub = await mosquittoPub(mqttUrl, `${name}/probe`, 'probe', { qos: 1 });
        assert.equal(pub.code, 0, pub.stderr);
        assert.ok((await readTopic(brokers, name, 5_000)).length > 0);
      },
      { timeoutMs: 60_000, intervalMs: 500 },
    );
    for (const n of [1, 2, 3]) assert.equal((await mosquittoPub(mqttUrl, `${name}/sensor-${n}`, `reading ${n}`, { qos: 1 })).code, 0);
    await eventually(
      async () => {
        const records = await readTopic(brokers, name, 5_000);
        assert.deepEqual(
          records.filter((r) => String(r.value) !== 'probe').map((r) => [r.key, String(r.value)]),
          [1, 2, 3].map((n) => [`${name}/sensor-${n}`, `reading ${n}`]),
        );
      },
      { timeoutMs: 30_000, intervalMs: 500 },
    );
    assert.match(output, /^ready\n(written \d+\n)+/);
    // Unsubscribing closes the broker connection, the buffer file and the producer: the process ends by itself.
    child.kill('SIGTERM');
    const [code] = (await exited) as [number | null];
    assert.equal(code, 0, output);
  } finally {
    killGroup();
    process.off('exit', killGroup);
  }
});
