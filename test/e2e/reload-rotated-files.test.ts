// A password file replaced in place (same path, new content), as a rotated secret is, under
// `ferry run`: `ferry reload` restarts the bridge whose sink reads it and reopens the database
// that names it, and says so, where it used to report everything unchanged and keep the old
// secret. The test server trusts loopback connections, so the new password itself is not
// checked by it; what is checked is that the components that read it started anew.
import assert from 'node:assert/strict';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { eventually } from '../harness/eventually.ts';
import { REPO_ROOT, ferry, startFerry } from '../harness/ferry-process.ts';
import { notesBridge } from '../harness/gateway-tree.ts';
import { mosquittoPub } from '../harness/mosquitto.ts';
import { testDatabase } from '../harness/pg-schema.ts';
import { randomName } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-e2e-rotated-');

const NOTES_BRIDGE = notesBridge();

test('a rotated password file: `ferry reload` restarts the bridge that reads it and reopens the database that names it', { timeout: 120_000 }, async (t) => {
  const db = await testDatabase(t);
  await db.query('CREATE TABLE readings (id uuid PRIMARY KEY, topic text NOT NULL)');
  await db.query('CREATE TABLE notes (id uuid PRIMARY KEY, topic text NOT NULL)');
  const root = tempDir();
  mkdirSync(join(root, 'bridges'));
  mkdirSync(join(root, 'secrets'));
  symlinkSync(join(REPO_ROOT, 'node_modules'), join(root, 'node_modules'));
  writeFileSync(join(root, 'secrets', 'sink-password'), 'first-sink\n');
  writeFileSync(join(root, 'secrets', 'db-password'), 'first-db\n');
  writeFileSync(
    join(root, 'gateway.yaml'),
    `gateway: {name: ${randomName('gw-')}}\nmqtt: {allowAnonymous: loopback}\nbridges: [bridges]\ndevices: []\ndatabases:\n  main:\n    postgres: {url: '${db.url}', password: {file: secrets/db-password}}\n`,
  );
  writeFileSync(
    join(root, 'bridges', 'readings.yaml'),
    `name: readings\nfrom: {mqtt: {topics: ["readings/#"]}}\nto:\n  - postgres:\n      url: '${db.url}'\n      password: {file: ../secrets/sink-password}\n      table: public.readings\n      columns: {id: "\${id}", topic: "\${topic}"}\n`,
  );
  writeFileSync(join(root, 'bridges', 'notes.ts'), NOTES_BRIDGE);
  const rows = async (table: string) => (await db.query<{ topic: string }>(`SELECT topic FROM ${table} ORDER BY topic`)).map((r) => r.topic);
  const reload = async () => {
    const result = await ferry(['reload', '--admin', gw.adminUrl]);
    assert.equal(result.code, 0, result.stderr);
    return result.stdout;
  };

  const gw = await startFerry(['--config', join(root, 'gateway.yaml'), '--data-dir', tempDir()]);
  t.after(() => gw.child.kill('SIGKILL'));
  await mosquittoPub(gw.mqttUrl, 'readings/a', 'first', { qos: 1 });
  await mosquittoPub(gw.mqttUrl, 'notes/a', 'first', { qos: 1 });
  await eventually(async () => assert.deepEqual([await rows('readings'), await rows('notes')], [['readings/a'], ['notes/a']]), { timeoutMs: 30_000 });

  // Written again with the same content: nothing to do.
  writeFileSync(join(root, 'secrets', 'sink-password'), 'first-sink\n');
  const same = await reload();
  assert.match(same, /changed: {3}-\n/);
  assert.match(same, /unchanged: readings, notes\n/);
  assert.match(same, /databases: unchanged\n/);

  writeFileSync(join(root, 'secrets', 'sink-password'), 'second-sink\n');
  writeFileSync(join(root, 'secrets', 'db-password'), 'second-db\n');
  const rotated = await reload();
  assert.match(rotated, /changed: {3}readings\n/);
  assert.match(rotated, /unchanged: notes\n/);
  assert.match(rotated, /databases: main \(open anew on next use\)\n/);
  assert.doesNotMatch(rotated, /warning/, 'both apply without a restart');
  assert.doesNotMatch(JSON.stringify(gw.logs), /first-|second-/, 'no secret in the logs');
  await eventually(() => assert.ok(gw.logs.some((l) => l['msg'] === "database 'main' closed")), { timeoutMs: 30_000 });

  // The restarted sink and the reopened database carry on.
  await mosquittoPub(gw.mqttUrl, 'readings/b', 'second', { qos: 1 });
  await mosquittoPub(gw.mqttUrl, 'notes/b', 'second', { qos: 1 });
  await eventually(
    async () =>
      assert.deepEqual(
        [await rows('readings'), await rows('notes')],
        [
          ['readings/a', 'readings/b'],
          ['notes/a', 'notes/b'],
        ],
      ),
    { timeoutMs: 30_000 },
  );

  gw.child.kill('SIGTERM');
  assert.equal(await gw.exited, 0);
});
