// Issue 13, item 3: two gateways (`ferry run`, two processes) reading one outbox table deliver
// each row once between them: FOR UPDATE SKIP LOCKED hands each row to one of them. Each
// publishes what it reads to the shared Mosquitto, where one subscriber counts the copies.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { connect } from 'mqtt';
import { fetchStatus } from '../harness/crashing-gateway.ts';
import { eventually } from '../harness/eventually.ts';
import { type RunningFerry, startFerry } from '../harness/ferry-process.ts';
import { testSchema } from '../harness/pg-schema.ts';
import { randomName, requireService } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-issue13-shared-outbox-');
const ROWS = 300;

test('two gateways on one outbox deliver each row once between them, both taking part', { timeout: 180_000 }, async (t) => {
  const db = await testSchema(t);
  const mosquitto = await requireService('mqtt');
  await db.query(`CREATE TABLE ${db.name}.outbox (id bigserial PRIMARY KEY, n text NOT NULL, payload text NOT NULL)`);
  const prefix = randomName('ferry-test-outbox-');

  const received: string[] = [];
  const subscriber = connect(mosquitto, { clientId: randomName('outbox-sub-'), reconnectPeriod: 0 });
  t.after(() => subscriber.endAsync());
  subscriber.on('message', (_topic, payload) => received.push(payload.toString()));
  await new Promise<void>((resolve, reject) => {
    subscriber.once('connect', () => resolve());
    subscriber.once('error', reject);
  });
  await subscriber.subscribeAsync(`${prefix}/#`, { qos: 1 });

  const gateway = async (name: string): Promise<RunningFerry> => {
    const root = tempDir();
    mkdirSync(join(root, 'bridges'));
    writeFileSync(join(root, 'gateway.yaml'), `gateway: {name: ${name}}\nmqtt: {allowAnonymous: loopback}\nbridges: [bridges]\ndevices: []\n`);
    writeFileSync(
      join(root, 'bridges', 'outbox.yaml'),
      `name: outbox\nfrom:\n  postgres:\n    url: \${POSTGRES_URL}\n    table: ${db.name}.outbox\n    keyColumn: n\n    batchSize: 10\n    pollIntervalMs: 200\nto:\n  - mqttClient:\n      url: ${mosquitto}\n      clientId: ${randomName(`${name}-`)}\n      topic: ${prefix}/\${key}\n      qos: 1\n`,
    );
    const gw = await startFerry(['--config', join(root, 'gateway.yaml'), '--data-dir', tempDir()], { POSTGRES_URL: db.url });
    t.after(() => gw.child.kill('SIGKILL'));
    return gw;
  };
  const insert = (from: number, to: number) =>
    db.query(`INSERT INTO ${db.name}.outbox (n, payload) SELECT i::text, 'row ' || i FROM generate_series($1::int, $2::int) i`, [from, to]);

  // A third before the gateways start, the rest while they run.
  await insert(1, 100);
  const gateways = await Promise.all([gateway('gw-a'), gateway('gw-b')]);
  for (let i = 101; i <= ROWS; i += 20) await insert(i, i + 19);

  await eventually(async () => assert.equal((await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${db.name}.outbox`))[0]?.n, 0), { timeoutMs: 60_000 });
  await eventually(() => assert.ok(received.length >= ROWS, `${received.length} of ${ROWS} received`), { timeoutMs: 30_000 });
  const read = await Promise.all(gateways.map(async (gw) => (await fetchStatus(gw.adminUrl)).counters['postgres.outbox.rows{bridge=outbox}'] ?? 0));
  assert.equal(
    read.reduce((a, b) => a + b, 0),
    ROWS,
    `rows read by the gateways: ${read.join(' + ')}`,
  );
  assert.ok(
    read.every((n) => n > 0),
    `both gateways read: ${read.join(', ')}`,
  );
  assert.equal(received.length, ROWS, 'copies at the broker');
  assert.deepEqual([...new Set(received)].sort(), Array.from({ length: ROWS }, (_, i) => `row ${i + 1}`).sort());
  for (const gw of gateways) {
    gw.child.kill('SIGTERM');
    assert.equal(await gw.exited, 0);
  }
});
