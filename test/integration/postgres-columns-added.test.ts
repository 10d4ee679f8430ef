// A postgres sink whose bridge maps a column the table does not have yet (the bridge deployed
// before `ferry migrate up` added the column, or the column dropped and added again) stops, its
// messages kept in the buffer. The migration then added the column, but a reload with the
// bridge's config unchanged left the bridge as it was, stopped: nothing was written, not only
// that column, until the gateway restarted. A reload now starts a bridge that failed again, so
// the sink reads the table anew and writes the buffered messages with the new column.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fetchStatus, pendingOf } from '../harness/crashing-gateway.ts';
import { eventually } from '../harness/eventually.ts';
import { startFerry } from '../harness/ferry-process.ts';
import { mosquittoPub } from '../harness/mosquitto.ts';
import { testSchema } from '../harness/pg-schema.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-pg-columns-added-');

const READINGS_BRIDGE = (schema: string) => `name: readings
from: {mqtt: {topics: [devices/+/t]}}
to:
  - postgres:
      url: \${POSTGRES_URL}
      table: ${schema}.readings
      columns:
        id: \${id}
        temp: \${payload.temp}
        humidity: \${payload.humidity}
`;
const HISTORY_BRIDGE = 'name: history\nfrom: {mqtt: {topics: [devices/+/t]}}\nto: [{history: {}}]\n';

type Status = Awaited<ReturnType<typeof fetchStatus>> & { bridges: { name: string; state: string; sinks: { lastError?: string }[] }[] };

test('postgres sink: a mapped column missing at startup is written once the migration added it and the gateway reloads, with the bridge config unchanged', {
  timeout: 120_000,
}, async (t) => {
  const db = await testSchema(t);
  await db.query(`CREATE TABLE ${db.name}.readings (id uuid PRIMARY KEY, temp double precision)`);
  const root = tempDir();
  mkdirSync(join(root, 'bridges'));
  writeFileSync(join(root, 'gateway.yaml'), 'mqtt: {allowAnonymous: loopback}\nbridges: [bridges]\ndevices: []\n');
  writeFileSync(join(root, 'bridges', 'readings.yaml'), READINGS_BRIDGE(db.name));
  writeFileSync(join(root, 'bridges', 'history.yaml'), HISTORY_BRIDGE);
  const gw = await startFerry(['--config', join(root, 'gateway.yaml'), '--data-dir', tempDir()], { POSTGRES_URL: db.url });
  t.after(() => gw.child.kill('SIGKILL'));
  const status = async () => (await fetchStatus(gw.adminUrl)) as Status;
  const bridge = async () => (await status()).bridges.find((b) => b.name === 'readings');
  const publish = async (temp: number) => {
    const pub = await mosquittoPub(gw.mqttUrl, 'devices/d1/t', JSON.stringify({ temp, humidity: temp * 10 }), { qos: 1, clientId: 'd1' });
    assert.equal(pub.code, 0, pub.stderr);
  };
  const rows = () => db.query(`SELECT temp, humidity FROM ${db.name}.readings ORDER BY temp`);

  await eventually(async () => assert.equal((await bridge())?.state, 'failed'), { timeoutMs: 30_000 });
  assert.match((await bridge())?.sinks[0]?.lastError ?? '', /readings has no column 'humidity' \(its columns: id uuid, temp double precision\)/);
  await publish(1);
  await publish(2);
  await eventually(async () => assert.equal(pendingOf(await status(), 'readings'), 2), { timeoutMs: 30_000 });

  await db.query(`ALTER TABLE ${db.name}.readings ADD COLUMN humidity double precision`);
  const response = await fetch(`${gw.adminUrl}/api/reload`, { method: 'POST', headers: { 'content-type': 'application/json' } });
  const body = (await response.json()) as { applied?: { changed: string[]; unchanged: string[] } };
  assert.equal(response.status, 200, JSON.stringify(body));

  // The messages buffered while the sink was stopped, with their humidity, and the next ones.
  await eventually(
    async () =>
      assert.deepEqual(await rows(), [
        { temp: 1, humidity: 10 },
        { temp: 2, humidity: 20 },
      ]),
    { timeoutMs: 30_000 },
  );
  assert.equal((await bridge())?.state, 'running');
  assert.deepEqual(body.applied?.changed, ['readings'], 'the failed bridge is started again, listed as changed');
  assert.deepEqual(body.applied?.unchanged, ['history'], 'a bridge that runs is not touched');
  await publish(3);
  await eventually(async () => assert.deepEqual((await rows()).at(-1), { temp: 3, humidity: 30 }), { timeoutMs: 30_000 });

  gw.child.kill('SIGTERM');
  assert.equal(await gw.exited, 0);
});
