// startGateway from the library: a stop called while the gateway starts, and the file paths of a
// config given as an object (relative to baseDir, with variables, a database's password file).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { startGateway } from '../../src/lib/gateway.ts';
import { readHistory } from '../../src/lib/sqlite.ts';
import { eventually } from '../harness/eventually.ts';
import { REPO_ROOT } from '../harness/ferry-process.ts';
import { mosquittoPub } from '../harness/mosquitto.ts';
import { requireService } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-library-gateway-');

// A program of its own: one that does not exit by itself shows what was left open.
const STOP_WHILE_STARTING = `
import { connect } from 'node:net';
import { startGateway } from ${JSON.stringify(pathToFileURL(join(REPO_ROOT, 'src/lib/gateway.ts')).href)};

const gateway = await startGateway({ config: { mqtt: { host: '127.0.0.1' }, log: { level: 'silent' } }, baseDir: process.argv[2], overrides: { mqttPort: 0, adminPort: 0 } });
let ports = [];
gateway.ready.then(() => (ports = [gateway.mqttPort, gateway.adminPort]), () => {});
const drained = await gateway.stop();
await gateway.ready.catch(() => {});
const accepting = (port) => new Promise((resolve) => {
  const socket = connect(port, '127.0.0.1');
  socket.once('connect', () => (socket.destroy(), resolve(true)));
  socket.once('error', () => resolve(false));
});
const open = [];
for (const port of ports) if (await accepting(port)) open.push(port);
console.log(JSON.stringify({ drained, ports, open }));
`;

test('stop() called before ready waits for the start, then stops: no listener stays open and the program exits', { timeout: 60_000 }, async () => {
  const dir = tempDir();
  writeFileSync(join(dir, 'stop.mts'), STOP_WHILE_STARTING);
  const child = spawn(process.execPath, ['--import', 'tsx', join(dir, 'stop.mts'), dir], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const code = await Promise.race([exited, new Promise<'running'>((resolve) => setTimeout(() => resolve('running'), 20_000).unref())]);
  if (code === 'running') process.kill(-(child.pid as number), 'SIGKILL');
  assert.notEqual(code, 'running', `the program did not exit 20 s after stop(): ${output}`);
  assert.equal(code, 0, output);
  const result = JSON.parse(output.trim().split('\n').at(-1) as string) as { drained: boolean; ports: number[]; open: number[] };
  assert.equal(result.ports.length, 2, output);
  assert.deepEqual(result.open, [], 'a listener is still open after stop()');
  assert.equal(result.drained, true);
});

test('a config object: a data directory named by a variable holding an absolute path is that path; a relative default is under baseDir', { timeout: 60_000 }, async () => {
  const base = tempDir();
  const elsewhere = tempDir();
  process.env['FERRY_TEST_LIBRARY_DATA'] = elsewhere;
  delete process.env['FERRY_TEST_LIBRARY_UNSET'];
  try {
    for (const [dataDir, expected] of [
      ['${FERRY_TEST_LIBRARY_DATA}', elsewhere],
      ['${FERRY_TEST_LIBRARY_UNSET:-state}', join(base, 'state')],
    ] as const) {
      const gateway = await startGateway({
        config: { gateway: { dataDir }, mqtt: { host: '127.0.0.1' }, admin: { enabled: false }, log: { level: 'silent' } },
        baseDir: base,
        overrides: { mqttPort: 0 },
      });
      try {
        await gateway.ready;
        assert.ok(existsSync(join(expected, 'buffer.db')), `${dataDir}: no buffer in ${expected}`);
      } finally {
        await gateway.stop();
      }
    }
  } finally {
    delete process.env['FERRY_TEST_LIBRARY_DATA'];
  }
});

test("a config object: a database's password file is relative to baseDir", { timeout: 60_000 }, async () => {
  const url = await requireService('pg');
  const base = tempDir();
  mkdirSync(join(base, 'bridges'));
  mkdirSync(join(base, 'secrets'));
  symlinkSync(join(REPO_ROOT, 'node_modules'), join(base, 'node_modules'));
  // The test server trusts loopback: the password is read (the file must be there), never asked for.
  writeFileSync(join(base, 'secrets', 'pg-password'), 'unused\n');
  writeFileSync(
    join(base, 'bridges', 'who.ts'),
    `import { concatMap } from 'rxjs';
import { sql } from 'kysely';
import { defineBridge } from 'ferry';

export default defineBridge({
  name: 'who',
  from: { mqtt: { topics: ['who/#'] } },
  to: { out: { history: {} } },
  handle: (messages, tools) =>
    messages.pipe(concatMap(async (m) => m.to('out', { json: (await sql\`SELECT 1 AS one\`.execute(tools.database('main'))).rows[0] }))),
});
`,
  );
  const gateway = await startGateway({
    config: {
      mqtt: { host: '127.0.0.1', allowAnonymous: 'loopback' },
      admin: { enabled: false },
      log: { level: 'silent' },
      bridges: ['bridges'],
      databases: { main: { postgres: { url, password: { file: 'secrets/pg-password' } } } },
    },
    baseDir: base,
    overrides: { mqttPort: 0 },
  });
  try {
    await gateway.ready;
    const pub = await mosquittoPub(`mqtt://127.0.0.1:${gateway.mqttPort}`, 'who/1', 'x', { qos: 1 });
    assert.equal(pub.code, 0, pub.stderr);
    await eventually(
      () => {
        const handler = gateway.status().bridges[0]?.handler;
        assert.deepEqual(
          readHistory(join(base, 'data')).map((r) => Buffer.from(r.payload).toString()),
          ['{"one":1}'],
          `the bridge's last error: ${handler?.lastError}`,
        );
      },
      { timeoutMs: 15_000 },
    );
  } finally {
    await gateway.stop();
  }
});
