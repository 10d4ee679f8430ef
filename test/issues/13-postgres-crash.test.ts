// Issue 13: the gateway killed with SIGKILL again and again while devices publish to a postgres
// bridge. Every acknowledged message must end as a row; a message the buffer sends again after a
// crash (written, but its cursor not moved yet) must not add a second row.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { CrashingGateway, fetchStatus, pendingOf } from '../harness/crashing-gateway.ts';
import { type Fleet, LoadPacer, startFleet } from '../harness/devices.ts';
import { freePorts } from '../harness/net.ts';
import { testSchema } from '../harness/pg-schema.ts';
import { tempDirs } from '../harness/temp.ts';

const DEVICES = 10;
const TOTAL = 10_000;
const WINDOW = 20;
const KILLS = 10;
const BRIDGE = 'telemetry-to-postgres';

const dirs = tempDirs('ferry-issue13-crash-');

test(`${TOTAL} acknowledged messages of ${DEVICES} devices are each a row, in device order, across ${KILLS} SIGKILLs; redeliveries add no row`, { timeout: 240_000 }, async (t) => {
  const db = await testSchema(t);
  await db.query(`CREATE TABLE ${db.name}.readings (n bigserial, id uuid PRIMARY KEY, device text NOT NULL, seq int NOT NULL)`);
  const root = dirs();
  mkdirSync(join(root, 'bridges'), { recursive: true });
  writeFileSync(join(root, 'gateway.yaml'), 'mqtt: {allowAnonymous: loopback}\nbridges: [bridges]\ndevices: []\n');
  writeFileSync(
    join(root, 'bridges', 'pg.yaml'),
    `name: ${BRIDGE}\nfrom: {mqtt: {topics: ["devices/+/telemetry/#"]}}\nto:\n  - postgres:\n      url: \${POSTGRES_URL}\n      table: ${db.name}.readings\n      columns:\n        id: \${id}\n        device: \${1}\n        seq: \${payload.seq}\n`,
  );
  const [mqttPort] = (await freePorts(1)) as [number];
  const gateway = await CrashingGateway.start(['--config', join(root, 'gateway.yaml'), '--data-dir', join(root, 'data'), '--mqtt-port', String(mqttPort)], {
    POSTGRES_URL: db.url,
  });
  const pacer = new LoadPacer(0);
  let fleet: Fleet | undefined;
  let skipped = 0;
  const readSkipped = async () => {
    const status = await fetchStatus(gateway.current.adminUrl).catch(() => undefined);
    return status?.counters[`postgres.rows.skipped{bridge=${BRIDGE}}`] ?? 0;
  };
  try {
    fleet = startFleet({ url: `mqtt://127.0.0.1:${mqttPort}`, devices: DEVICES, total: TOTAL, window: WINDOW, clientIdPrefix: 'pg-crash-', reconnectPeriodMs: 200, pacer });
    for (let kill = 0; kill < KILLS; kill++) {
      pacer.setLimit(Math.floor((TOTAL * (kill + 1)) / (KILLS + 1)));
      await sleep(500 + Math.random() * 1500);
      skipped += await readSkipped();
      await gateway.kill();
      await gateway.restart();
    }
    pacer.setLimit(TOTAL);
    await fleet.done;
    let pending = -1;
    for (let i = 0; i < 1200 && pending !== 0; i++) {
      pending = pendingOf(await fetchStatus(gateway.current.adminUrl), BRIDGE);
      if (pending !== 0) await sleep(100);
    }
    assert.equal(pending, 0, 'not drained within 120 s');
    skipped += await readSkipped();
    const status = await fetchStatus(gateway.current.adminUrl);
    assert.equal(status.buffer.bridges.find((b) => b.bridge === BRIDGE)?.deadLetters, 0);

    const rows = await db.query<{ device: string; seq: number }>(`SELECT device, seq FROM ${db.name}.readings ORDER BY n`);
    const byDevice = new Map<string, number[]>();
    for (const row of rows) byDevice.set(row.device, [...(byDevice.get(row.device) ?? []), row.seq]);
    let republishedRows = 0;
    for (const device of fleet.devices) {
      const seqs = byDevice.get(device.clientId) ?? [];
      const present = new Set(seqs);
      assert.deepEqual(
        [...device.acked].filter((seq) => !present.has(seq)),
        [],
        `${device.clientId}: acknowledged but not in the table`,
      );
      const firsts = seqs.filter((seq, i) => seqs.indexOf(seq) === i);
      assert.deepEqual(
        firsts,
        [...firsts].sort((a, b) => a - b),
        `${device.clientId}: rows not inserted in the device's order`,
      );
      republishedRows += seqs.length - firsts.length;
      // A seq twice means the device published it twice (its PUBACK was lost in a crash) and the
      // gateway took both, with two ids: never the same message written twice.
      assert.ok(seqs.length - firsts.length <= device.republished, `${device.clientId}: more duplicate rows than re-publishes`);
    }
    t.diagnostic(
      `${rows.length} rows for ${TOTAL} messages after ${gateway.kills} kills; ${republishedRows} rows of seqs devices published again; ` +
        `${skipped} redelivered rows skipped by ON CONFLICT (counted by incarnations that were read before their kill)`,
    );
  } finally {
    pacer.stop();
    await fleet?.close();
    gateway.forceKill();
  }
});
