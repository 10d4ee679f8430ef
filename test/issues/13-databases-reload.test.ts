// Issue 13, item 4: the databases of gateway.yaml under `ferry run`. A TypeScript bridge writes
// through tools.database (no sink: it acks with done() after the commit); its connections carry
// the gateway's name; a reload that drops the database (and the bridge) closes its pool, and one
// that brings it back opens it anew for the new bridge.
import assert from 'node:assert/strict';
import { mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { eventually } from '../harness/eventually.ts';
import { REPO_ROOT, startFerry } from '../harness/ferry-process.ts';
import { notesBridge } from '../harness/gateway-tree.ts';
import { mosquittoPub } from '../harness/mosquitto.ts';
import { testDatabase } from '../harness/pg-schema.ts';
import { randomName } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-issue13-databases-');

const NOTES_BRIDGE = notesBridge({ ignoreDuplicates: true });

test('tools.database under ferry run: rows written by a handler with no sink; a reload that drops the database closes its pool, one that adds it back opens it', {
  timeout: 120_000,
}, async (t) => {
  const db = await testDatabase(t);
  await db.query('CREATE TABLE notes (id uuid PRIMARY KEY, topic text NOT NULL)');
  const name = randomName('gw-');
  const root = tempDir();
  mkdirSync(join(root, 'bridges'));
  symlinkSync(join(REPO_ROOT, 'node_modules'), join(root, 'node_modules'));
  const gatewayYaml = (withDatabase: boolean) =>
    `gateway: {name: ${name}}\nmqtt: {allowAnonymous: loopback}\nbridges: [bridges]\ndevices: []\n${withDatabase ? `databases:\n  main:\n    postgres: {url: '${db.url}'}\n` : ''}`;
  writeFileSync(join(root, 'gateway.yaml'), gatewayYaml(true));
  writeFileSync(join(root, 'bridges', 'notes.ts'), NOTES_BRIDGE);
  const connections = async () => (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1', [name]))[0]?.n ?? 0;
  const notes = async () => (await db.query<{ topic: string }>('SELECT topic FROM notes ORDER BY topic')).map((r) => r.topic);
  const reload = async (adminUrl: string) => {
    const response = await fetch(`${adminUrl}/api/reload`, { method: 'POST', headers: { 'content-type': 'application/json' } });
    const body = (await response.json()) as { applied?: Record<string, unknown>; warnings?: string[] };
    assert.equal(response.status, 200, JSON.stringify(body));
    return body;
  };

  const gw = await startFerry(['--config', join(root, 'gateway.yaml'), '--data-dir', tempDir()]);
  t.after(() => gw.child.kill('SIGKILL'));
  await mosquittoPub(gw.mqttUrl, 'notes/a', 'first', { qos: 1 });
  await eventually(async () => assert.deepEqual(await notes(), ['notes/a']), { timeoutMs: 30_000 });
  assert.ok((await connections()) >= 1, 'a pool connection named after the gateway');

  rmSync(join(root, 'bridges', 'notes.ts'));
  writeFileSync(join(root, 'gateway.yaml'), gatewayYaml(false));
  const dropped = await reload(gw.adminUrl);
  assert.deepEqual(dropped.applied?.['removed'], ['notes']);
  assert.deepEqual(dropped.warnings, [], 'databases apply without a restart');
  await eventually(async () => assert.equal(await connections(), 0, 'the dropped database still has connections'), { timeoutMs: 30_000 });
  assert.ok(gw.logs.some((l) => l['msg'] === "database 'main' closed"));

  writeFileSync(join(root, 'gateway.yaml'), gatewayYaml(true));
  writeFileSync(join(root, 'bridges', 'notes.ts'), NOTES_BRIDGE);
  assert.deepEqual((await reload(gw.adminUrl)).applied?.['added'], ['notes']);
  await mosquittoPub(gw.mqttUrl, 'notes/b', 'second', { qos: 1 });
  await eventually(async () => assert.deepEqual(await notes(), ['notes/a', 'notes/b']), { timeoutMs: 30_000 });

  gw.child.kill('SIGTERM');
  assert.equal(await gw.exited, 0);
  await eventually(async () => assert.equal(await connections(), 0, 'connections left after shutdown'));
});

test('tools.database for a handler bridge added by a reload to a gateway that started with no handler (Kysely is loaded only for handlers)', { timeout: 120_000 }, async (t) => {
  const db = await testDatabase(t);
  await db.query('CREATE TABLE notes (id uuid PRIMARY KEY, topic text NOT NULL)');
  const root = tempDir();
  mkdirSync(join(root, 'bridges'));
  symlinkSync(join(REPO_ROOT, 'node_modules'), join(root, 'node_modules'));
  writeFileSync(
    join(root, 'gateway.yaml'),
    `gateway: {name: ${randomName('gw-')}}\nmqtt: {allowAnonymous: loopback}\nbridges: [bridges]\ndevices: []\ndatabases:\n  main:\n    postgres: {url: '${db.url}'}\n`,
  );
  const gw = await startFerry(['--config', join(root, 'gateway.yaml'), '--data-dir', tempDir()]);
  t.after(() => gw.child.kill('SIGKILL'));

  writeFileSync(join(root, 'bridges', 'notes.ts'), NOTES_BRIDGE);
  const response = await fetch(`${gw.adminUrl}/api/reload`, { method: 'POST', headers: { 'content-type': 'application/json' } });
  const body = (await response.json()) as { applied?: Record<string, unknown> };
  assert.equal(response.status, 200, JSON.stringify(body));
  assert.deepEqual(body.applied?.['added'], ['notes']);
  await mosquittoPub(gw.mqttUrl, 'notes/late', 'first', { qos: 1 });
  await eventually(
    async () =>
      assert.deepEqual(
        (await db.query<{ topic: string }>('SELECT topic FROM notes')).map((r) => r.topic),
        ['notes/late'],
      ),
    { timeoutMs: 30_000 },
  );

  gw.child.kill('SIGTERM');
  assert.equal(await gw.exited, 0);
});
