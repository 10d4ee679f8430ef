// Issue 11 (idle memory): `ferry run` holds TurboFan back through its start and while idle, and
// lets it go under load (test/unit/compiler-tiering.test.ts checks what the flags do to V8). The
// mark is read from inside the gateway by a module loaded with --import.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { connectAsync } from 'mqtt';
import { REPO_ROOT, startFerry } from '../harness/ferry-process.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-tiering-');

test('`ferry run` holds TurboFan back through its start and while idle, and turns it on under load', async () => {
  const root = tempDir();
  const probe = join(root, 'probe');
  const config = join(root, 'gateway.yaml');
  writeFileSync(config, 'mqtt: {allowAnonymous: loopback}\nbridges: []\n');
  const gw = await startFerry(['--config', config, '--data-dir', join(root, 'data')], {
    NODE_OPTIONS: `--import ${join(REPO_ROOT, 'test/fixtures/tiering-probe.mjs')}`,
    TIERING_PROBE_FILE: probe,
  });
  try {
    // Past the start's garbage collection (a second after ready), which is not load.
    await sleep(1_800);
    assert.equal(readFileSync(probe, 'utf8'), 'true', 'held back while idle');
    const device = await connectAsync(gw.mqttUrl, { clientId: 'busy', reconnectPeriod: 0 });
    // Load without a pause, as a busy fleet gives (three busy periods of 100 ms in a row).
    let resumed = false;
    const until = Date.now() + 15_000;
    while (!resumed && Date.now() < until) {
      await Promise.all(Array.from({ length: 1_000 }, (_, i) => device.publishAsync('devices/busy/telemetry', `reading ${i}`, { qos: 1 })));
      resumed = readFileSync(probe, 'utf8') === 'false';
    }
    await device.endAsync(true);
    assert.ok(resumed, 'TurboFan turned on under load');
  } finally {
    gw.child.kill('SIGKILL');
  }
});
