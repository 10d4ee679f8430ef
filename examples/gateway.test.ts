// A test of your own bridges with a gateway started in the test process: the embedded broker on
// a free port, a device publishing, the message read back from the local history.
// Run: node --test examples/gateway.test.ts
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startGateway } from 'ferry';
import { readHistory } from 'ferry/sqlite';
import { connectAsync } from 'mqtt';

test('a device message is kept in the history', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'ferry-example-'));
  const gateway = await startGateway({
    configPath: new URL('gateway/gateway.yaml', import.meta.url).pathname,
    overrides: { mqttPort: 0, adminPort: 0, dataDir },
  });
  try {
    await gateway.ready;
    const device = await connectAsync(`mqtt://127.0.0.1:${gateway.mqttPort}`, { clientId: 'sensor-1' });
    await device.publishAsync('devices/sensor-1/telemetry', '{"celsius":21}', { qos: 1 });
    await device.endAsync();
    // The PUBACK means the message is in the buffer; the history sink writes it a moment later.
    for (let deadline = Date.now() + 10_000; gateway.status().bridges[0]?.sinks[0]?.written !== 1; await sleep(20)) {
      assert.ok(Date.now() < deadline, 'the history sink did not write the message within 10 s');
    }
    assert.deepEqual(
      readHistory(dataDir).map((row) => [row.clientId, row.topic, Buffer.from(row.payload).toString()]),
      [['sensor-1', 'devices/sensor-1/telemetry', '{"celsius":21}']],
    );
  } finally {
    await gateway.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
});
