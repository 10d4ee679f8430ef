// Issue 13, item 5: the PostgreSQL example as the README runs it, with the shipped config,
// migrations and bridges: `ferry migrate up`, `ferry run`, a device publishing with
// mosquitto_pub. Readings land once each (two bridges write the table; the message id keeps
// one row), ReadingRepository answers from them, and a command written to device_commands
// reaches a device.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { ReadingRepository, type Tables } from '../../bridges/lib/reading-repository.ts';
import { connectCommandDevice } from '../harness/command-device.ts';
import { eventually } from '../harness/eventually.ts';
import { ferry, startFerry } from '../harness/ferry-process.ts';
import { mosquittoPub } from '../harness/mosquitto.ts';
import { testDatabase } from '../harness/pg-schema.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-issue13-example-');

test('the README example: migrate up, run, publish; readings persisted once each through ReadingRepository; a command reaches its device', { timeout: 120_000 }, async (t) => {
  const db = await testDatabase(t);
  const env = { POSTGRES_URL: db.url };

  const migrated = await ferry(['migrate', 'up'], env);
  assert.equal(migrated.code, 0, migrated.stderr);
  assert.match(migrated.stdout, /applied\s+20261204_000100_create_devices\n.*create_readings\n.*create_device_commands\n/);

  const gw = await startFerry(['--config', 'config/gateway.yaml', '--data-dir', tempDir()], env);
  t.after(() => gw.child.kill('SIGKILL'));
  const bridges = gw.logs.find((l) => Array.isArray(l['bridges']))?.['bridges'];
  assert.deepEqual([...(bridges as string[])].sort(), ['commands-from-postgres', 'readings-to-postgres', 'telemetry-history', 'telemetry-to-postgres']);

  const sent = [
    { device: 'pump-1', body: { bar: 2.5 } },
    { device: 'pump-2', body: { bar: 1.25 } },
    { device: 'pump-1', body: { bar: 2.75 } },
  ];
  for (const m of sent) await mosquittoPub(gw.mqttUrl, `devices/${m.device}/telemetry/pressure`, JSON.stringify(m.body), { qos: 1 });

  await eventually(async () => assert.equal((await db.query<{ n: number }>('SELECT count(*)::int AS n FROM readings'))[0]?.n, 3), { timeoutMs: 30_000 });
  await eventually(async () => assert.equal((await db.query<{ n: number }>('SELECT count(*)::int AS n FROM devices'))[0]?.n, 2), { timeoutMs: 30_000 });

  const kysely = new Kysely<Tables>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: db.url, max: 2 }) }) });
  // Closed before the test's database is dropped (the drop ends the connections left).
  try {
    const readings = new ReadingRepository(kysely);
    const latest = await readings.latestPerDevice();
    assert.deepEqual(
      latest.map((r) => [r.device, r.body]),
      [
        ['pump-1', { bar: 2.75 }],
        ['pump-2', { bar: 1.25 }],
      ],
    );
    const range = await readings.between('pump-1', new Date(Date.now() - 60_000), new Date(Date.now() + 1000));
    assert.deepEqual(
      range.map((r) => r.body),
      [{ bar: 2.5 }, { bar: 2.75 }],
    );
    assert.deepEqual(await readings.between('pump-1', new Date(0), new Date(1000)), []);
    // The repository skips a reading it has already (a message delivered again).
    const again = range[0] as (typeof range)[number];
    assert.equal(await readings.insertBatch([{ id: again.id, device: again.device, topic: again.topic, received_at: again.received_at, body: JSON.stringify(again.body) }]), 0);
  } finally {
    await kysely.destroy();
  }

  const device = await connectCommandDevice(gw.mqttUrl, { clientId: 'pump-1', filter: 'devices/pump-1/commands' });
  try {
    await db.query(`INSERT INTO device_commands (device, command) VALUES ('pump-1', '{"stop": true}')`);
    const [command] = await device.waitFor(1);
    assert.deepEqual(JSON.parse(command?.payload.toString() ?? ''), { stop: true });
    await eventually(async () => assert.equal((await db.query<{ n: number }>('SELECT count(*)::int AS n FROM device_commands'))[0]?.n, 0));
  } finally {
    await device.end();
  }

  gw.child.kill('SIGTERM');
  assert.equal(await gw.exited, 0);
});
