// Issue 13, item 3: commands a backend writes into an outbox table reach a real MQTT device
// through the example bridge under `ferry run`: at once while the gateway runs (woken by the
// table's NOTIFY trigger), and, for rows written while the gateway was down, after it starts
// again, each once; every row is deleted once its device acknowledged it. A command read again
// after a crash (its row still in the table) is the same message, and reaches its device once.
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import Database from 'better-sqlite3';
import { type CommandDevice, connectCommandDevice } from '../harness/command-device.ts';
import { eventually } from '../harness/eventually.ts';
import { REPO_ROOT, type RunningFerry, startFerry } from '../harness/ferry-process.ts';
import { testSchema } from '../harness/pg-schema.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-issue13-outbox-');

/** The example bridge as shipped, on the test's own schema. */
function tree(schema: string): string {
  const root = tempDir();
  mkdirSync(join(root, 'bridges'));
  writeFileSync(join(root, 'gateway.yaml'), 'mqtt: {allowAnonymous: loopback}\nbridges: [bridges]\ndevices: []\n');
  const bridge = readFileSync(join(REPO_ROOT, 'bridges/commands-from-postgres.yaml'), 'utf8');
  assert.match(bridge, /table: public\.device_commands/);
  writeFileSync(join(root, 'bridges', 'commands-from-postgres.yaml'), bridge.replace('table: public.device_commands', `table: ${schema}.device_commands`));
  return join(root, 'gateway.yaml');
}

/** The outbox as the example migration makes it, in schema `s`. */
const DEVICE_COMMANDS = (
  s: string,
) => `CREATE TABLE ${s}.device_commands (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, device text NOT NULL, command jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
    CREATE FUNCTION ${s}.device_commands_notify() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('device_commands', ''); RETURN NULL; END $$;
    CREATE TRIGGER device_commands_notify AFTER INSERT ON ${s}.device_commands FOR EACH STATEMENT EXECUTE FUNCTION ${s}.device_commands_notify();`;

/** A test schema with the outbox, the example bridge on it, and a data dir. */
async function outboxTree(t: TestContext) {
  const db = await testSchema(t);
  const s = db.name;
  await db.query(DEVICE_COMMANDS(s));
  return { db, s, config: tree(s), dataDir: tempDir() };
}

/** After a while for any copy to come: the device got steps 1-3 once each, in order; then the gateway stops cleanly. */
async function receivedOnceInOrderThenStop(device: CommandDevice, gw: RunningFerry): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.deepEqual(
    device.received.map((c) => JSON.parse(c.payload.toString())),
    [{ step: 1 }, { step: 2 }, { step: 3 }],
    'each once, in the order written',
  );
  gw.child.kill('SIGTERM');
  assert.equal(await gw.exited, 0);
}

test('commands written into device_commands reach an MQTT device: live, and those written while the gateway was down after it starts, each once', {
  timeout: 120_000,
}, async (t) => {
  const { db, s, config, dataDir } = await outboxTree(t);
  const outbox = async () => (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${s}.device_commands`))[0]?.n;

  let gw = await startFerry(['--config', config, '--data-dir', dataDir], { POSTGRES_URL: db.url });
  t.after(() => gw.child.kill('SIGKILL'));
  // A device with a persistent session: the broker keeps its subscription across the restart.
  let device = await connectCommandDevice(gw.mqttUrl, { clientId: 'valve-7', filter: 'devices/valve-7/commands', clean: false });
  await db.query(`INSERT INTO ${s}.device_commands (device, command) VALUES ('valve-7', '{"open": true}')`);
  const [live] = await device.waitFor(1);
  assert.equal(live?.topic, 'devices/valve-7/commands');
  assert.deepEqual(JSON.parse(live?.payload.toString() ?? ''), { open: true });
  await eventually(async () => assert.equal(await outbox(), 0, 'the acknowledged command is still in the outbox'));
  await device.end();

  gw.child.kill('SIGTERM');
  assert.equal(await gw.exited, 0);
  for (let i = 1; i <= 3; i++) await db.query(`INSERT INTO ${s}.device_commands (device, command) VALUES ('valve-7', $1)`, [{ step: i }]);
  assert.equal(await outbox(), 3);

  gw = await startFerry(['--config', config, '--data-dir', dataDir], { POSTGRES_URL: db.url });
  device = await connectCommandDevice(gw.mqttUrl, { clientId: 'valve-7', filter: 'devices/valve-7/commands', clean: false, subscribe: false });
  t.after(() => device.end());
  await device.waitFor(3);
  await eventually(async () => assert.equal(await outbox(), 0, 'acknowledged commands are still in the outbox'));
  const counters = ((await (await fetch(`${gw.adminUrl}/api/status`)).json()) as { counters: Record<string, number> }).counters;
  assert.equal(counters['postgres.outbox.rows{bridge=commands-from-postgres}'], 3, 'each row read from the outbox once');
  // Each row was read once (above), and each reaches the device once, in the order written:
  // the resume sends a command the broker queued while the device was away by its queue or
  // live as it is published, not both.
  await receivedOnceInOrderThenStop(device, gw);
});

test('commands queued for an offline device when the gateway is killed are read again after the restart and reach the device once each', {
  timeout: 120_000,
}, async (t) => {
  const { db, s, config, dataDir } = await outboxTree(t);
  const queued = () => {
    const state = new Database(join(dataDir, 'broker.db'), { readonly: true });
    try {
      return state.prepare("SELECT count(*) FROM queue WHERE client_id = 'valve-9'").pluck().get() as number;
    } finally {
      state.close();
    }
  };

  let gw = await startFerry(['--config', config, '--data-dir', dataDir], { POSTGRES_URL: db.url });
  t.after(() => gw.child.kill('SIGKILL'));
  const away = await connectCommandDevice(gw.mqttUrl, { clientId: 'valve-9', filter: 'devices/valve-9/commands', clean: false });
  await away.end();
  for (let i = 1; i <= 3; i++) await db.query(`INSERT INTO ${s}.device_commands (device, command) VALUES ('valve-9', $1)`, [{ step: i }]);
  // Queued in the device's session, their rows locked and still in the outbox: nobody acked them.
  await eventually(() => assert.equal(queued(), 3));
  gw.child.kill('SIGKILL');
  await gw.exited;

  gw = await startFerry(['--config', config, '--data-dir', dataDir], { POSTGRES_URL: db.url });
  const status = async () => ((await (await fetch(`${gw.adminUrl}/api/status`)).json()) as { counters: Record<string, number> }).counters;
  // Read again, each is known as the command its session holds a copy of.
  await eventually(async () => assert.equal((await status())['commands.deduplicated{bridge=commands-from-postgres,how=held}'], 3));
  assert.equal(queued(), 3, 'not queued a second time');
  const device = await connectCommandDevice(gw.mqttUrl, { clientId: 'valve-9', filter: 'devices/valve-9/commands', clean: false, subscribe: false });
  t.after(() => device.end());
  await device.waitFor(3);
  await eventually(async () =>
    assert.equal((await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${s}.device_commands`))[0]?.n, 0, 'the PUBACKs settle the rows read again'),
  );
  await receivedOnceInOrderThenStop(device, gw);
});
