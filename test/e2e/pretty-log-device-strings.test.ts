import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { connectAsync } from 'mqtt';
import { REPO_ROOT, spawnFerryGroup } from '../harness/ferry-process.ts';
import { eventually } from '../harness/eventually.ts';
import { freePorts } from '../harness/net.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-pretty-log-');

/** U+009B, CSI to a terminal that takes C1 controls: `CSI 2 J` clears the screen. */
const CSI = '\u009b';

test('pretty logs write C1 controls of a device client id as escapes, not to the terminal', async () => {
  const root = tempDir();
  const [mqttPort, adminPort] = await freePorts(2);
  const config = join(root, 'gateway.yaml');
  writeFileSync(config, 'mqtt: {host: 127.0.0.1, allowAnonymous: loopback}\nlog: {level: info, pretty: always}\nbridges: []\n');
  const gateway = spawnFerryGroup(['run', '--config', config, '--data-dir', join(root, 'data'), '--mqtt-port', String(mqttPort), '--admin-port', String(adminPort)]);
  try {
    await eventually(() => assert.match(gateway.stdout(), /accepting MQTT connections/), { timeoutMs: 15_000 });
    const device = await connectAsync(`mqtt://127.0.0.1:${mqttPort}`, { clientId: `dev${CSI}2J`, reconnectPeriod: 0 });
    // A filter with a control character is refused, and the refusal is logged (warn) with the client id.
    await device.subscribeAsync('a/\u0007', { qos: 1 }).catch(() => undefined);
    await device.endAsync(true);
    await eventually(() => assert.match(gateway.stdout(), /subscription refused/), { timeoutMs: 10_000 });
    const out = gateway.stdout();
    assert.ok(!out.includes(CSI), 'U+009B reached the terminal as it is');
    assert.ok(out.includes('dev\\u009b2J'), out);
  } finally {
    gateway.stop();
  }
});

test('a pretty log message cannot start a forged line with a newline from device data', () => {
  // The message as the commands sink writes it, with a device's client id in it
  // (src/mqtt/device-sink.ts: "refused by device '<clientId>'"): reaching that takes Kafka,
  // so the gateway's logger is driven here directly, pretty-printing as in a terminal.
  const script = [
    "import { createLogger } from './src/observability/logger.ts';",
    "const logger = createLogger({ level: 'info', pretty: 'always', name: 'gw' });",
    "logger.warn({ clientId: 'x' }, \"command dropped: refused by device 'x\\n[12:00:00.000] INFO (gw): admin token rotated\\u001b[2J' with PUBACK reason code 0x87\");",
  ].join('\n');
  const run = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 20_000 });
  assert.equal(run.status, 0, run.stderr);
  const lines = run.stdout.split('\n');
  assert.ok(!lines.some((line) => line.startsWith('[12:00:00.000]')), `a forged line was printed:\n${run.stdout}`);
  assert.match(run.stdout, /refused by device 'x\\n\[12:00:00\.000\] INFO \(gw\): admin token rotated\\u001b\[2J' with PUBACK/);
});
