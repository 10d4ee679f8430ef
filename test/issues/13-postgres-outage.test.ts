// Issue 13: PostgreSQL down for 30 s in the middle of a stream: a private server the test makes
// with initdb is stopped with `pg_ctl stop -m fast` (its sessions are ended, as in a restart)
// and started again (the shared server is never touched). Devices stay acknowledged from the
// buffer, /api/status says the sink is down and why, the sink retries with backoff, and once
// the server is back every acknowledged message is a row, once, inserted in each device's order.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { fetchStatus, pendingOf } from '../harness/crashing-gateway.ts';
import { LoadPacer, startFleet } from '../harness/devices.ts';
import { startFerry } from '../harness/ferry-process.ts';
import pg from 'pg';
import { startPrivatePostgres } from '../harness/private-postgres.ts';
import { tempDirs } from '../harness/temp.ts';

const DEVICES = 4;
const TOTAL = 2_000;
const WINDOW = 10;
const OUTAGE_MS = 30_000;
const BRIDGE = 'telemetry-to-postgres';

const dirs = tempDirs('ferry-issue13-outage-');

test(`PostgreSQL unreachable for ${OUTAGE_MS / 1000} s mid-stream: devices stay acknowledged, and every acknowledged message becomes one row, in device order`, {
  timeout: 180_000,
}, async (t) => {
  const server = await startPrivatePostgres();
  t.after(() => server.destroy());
  const admin = new pg.Client({ connectionString: server.url });
  await admin.connect();
  const db = {
    name: 'outage',
    query: async <R extends pg.QueryResultRow>(text: string) => {
      // The test's own connection: made again when the outage ended it.
      for (let attempt = 0; ; attempt++) {
        const client = new pg.Client({ connectionString: server.url });
        try {
          await client.connect();
          return (await client.query<R>(text)).rows;
        } catch (error) {
          if (attempt >= 20) throw error;
          await sleep(250);
        } finally {
          await client.end().catch(() => {});
        }
      }
    },
  };
  await admin.query('CREATE SCHEMA outage');
  await admin.end();
  // `n` numbers the rows in the order they were inserted.
  await db.query(`CREATE TABLE ${db.name}.readings (n bigserial, id uuid PRIMARY KEY, device text NOT NULL, seq int NOT NULL, received_at timestamptz NOT NULL)`);
  const url = server.url;
  const root = dirs();
  mkdirSync(join(root, 'bridges'), { recursive: true });
  writeFileSync(join(root, 'gateway.yaml'), 'mqtt: {allowAnonymous: loopback}\nbridges: [bridges]\ndevices: []\n');
  writeFileSync(
    join(root, 'bridges', 'pg.yaml'),
    `name: ${BRIDGE}
from: {mqtt: {topics: ["devices/+/telemetry/#"]}}
to:
  - postgres:
      url: ${url}
      table: ${db.name}.readings
      connectTimeoutMs: 1000
      columns:
        id: \${id}
        device: \${1}
        seq: \${payload.seq}
        received_at: \${timestamp}
buffer: {retryMaxMs: 2000}
`,
  );
  const gw = await startFerry(['--config', join(root, 'gateway.yaml'), '--data-dir', join(root, 'data')]);
  t.after(() => {
    gw.child.kill('SIGKILL');
  });
  const pacer = new LoadPacer(0);
  const fleet = startFleet({ url: gw.mqttUrl, devices: DEVICES, total: TOTAL, window: WINDOW, clientIdPrefix: 'pg-outage-', pacer });
  let released = 0;
  const release = setInterval(() => pacer.setLimit((released = Math.min(TOTAL, released + 25))), 100);
  try {
    while (fleet.acknowledged() < TOTAL / 5) await sleep(50);
    server.stop();
    const ackedAtCut = fleet.acknowledged();
    await sleep(OUTAGE_MS);
    const ackedDuringOutage = fleet.acknowledged() - ackedAtCut;
    const during = await fetchStatus(gw.adminUrl);
    const ready = await fetch(`${gw.adminUrl}/readyz`);
    server.start();

    await fleet.done;
    let pending = -1;
    for (let i = 0; i < 600 && pending !== 0; i++) {
      pending = pendingOf(await fetchStatus(gw.adminUrl), BRIDGE);
      if (pending !== 0) await sleep(100);
    }
    assert.equal(pending, 0, 'the backlog did not drain within 60 s of the server coming back');
    const after = await fetchStatus(gw.adminUrl);
    const retries = after.counters[`buffer.retries{bridge=${BRIDGE},sink=postgres}`] ?? 0;
    t.diagnostic(
      `acked ${fleet.acknowledged()}/${TOTAL}; ${ackedDuringOutage} acknowledged while PostgreSQL was unreachable (buffered then: ${pendingOf(during, BRIDGE)}); ${retries} write retries`,
    );
    assert.ok(ackedDuringOutage > 0, 'no device was acknowledged during the outage');
    assert.ok(pendingOf(during, BRIDGE) > 0, 'nothing was held in the buffer during the outage');
    // The gateway still takes traffic (ready), and says which sink is down and why.
    assert.equal(ready.status, 200, 'devices are still acknowledged from the buffer');
    const problems = (during as unknown as { health: { degraded: { bridge: string; sink?: string; problem: string; detail: string }[] } }).health.degraded;
    const down = problems.find((p) => p.bridge === BRIDGE && p.sink === 'postgres');
    assert.ok(down !== undefined && (down.problem === 'down' || down.problem === 'stalled'), `degraded: ${JSON.stringify(problems)}`);
    assert.match(down.detail, /postgres|PostgreSQL|connect|ECONNREFUSED|terminat/i);
    assert.ok(retries > 0, 'the sink never retried');
    assert.equal(after.buffer.bridges.find((b) => b.bridge === BRIDGE)?.deadLetters, 0, 'nothing dead-lettered for an outage');

    const rows = await db.query<{ device: string; seq: number }>(`SELECT device, seq FROM ${db.name}.readings ORDER BY n`);
    const seen = new Map<string, number[]>();
    for (const row of rows) seen.set(row.device, [...(seen.get(row.device) ?? []), row.seq]);
    for (const device of fleet.devices) {
      const seqs = seen.get(device.clientId) ?? [];
      const missing = [...device.acked].filter((seq) => !seqs.includes(seq));
      assert.deepEqual(missing, [], `${device.clientId}: acknowledged but not in the table`);
      assert.deepEqual(
        seqs,
        [...seqs].sort((a, b) => a - b),
        `${device.clientId}: rows not inserted in the device's order`,
      );
    }
    assert.equal(rows.length, TOTAL, 'one row per message');
  } finally {
    clearInterval(release);
    pacer.stop();
    await fleet.close();
    gw.child.kill('SIGTERM');
    await gw.exited;
  }
});
