// `ferry device hash-password`: the hash it prints for a piped password is one a running gateway
// accepts in a device profile; in a terminal the password is typed twice, unseen, and Ctrl-C or
// Ctrl-D at the prompt ends the command (they left the prompt's promise unsettled, and Node
// exited 13 with "Warning: Detected unsettled top-level await").
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { verifyPassword } from '../../src/mqtt/password.ts';
import { FERRY_BIN, REPO_ROOT, type RunningFerry, startFerry } from '../harness/ferry-process.ts';
import { writeGatewayTree } from '../harness/gateway-tree.ts';
import { mosquittoPub } from '../harness/mosquitto.ts';
import { tempDirs } from '../harness/temp.ts';

const PTY_SESSION = fileURLToPath(new URL('../harness/pty-session.py', import.meta.url));
const tempDir = tempDirs('ferry-hash-password-');
let gw: RunningFerry | undefined;
after(() => gw?.child.kill('SIGKILL'));

async function hashOfPiped(input: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [FERRY_BIN, 'device', 'hash-password'], { cwd: REPO_ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  child.stdin.end(input);
  const [code] = (await once(child, 'close')) as [number | null];
  return { code, stdout, stderr };
}

/** `ferry device hash-password` in a terminal: for each step, waits for a prompt and types. */
async function inTerminal(steps: readonly (readonly [string, string])[]): Promise<{ code: number | null; output: string }> {
  const child = spawn('python3', [PTY_SESSION, '10', JSON.stringify(steps), process.execPath, FERRY_BIN, 'device', 'hash-password'], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  const [code] = (await once(child, 'close')) as [number | null];
  assert.equal(code, 0, `pty-session.py failed (python3 is Debian's python3 package): ${out}`);
  return JSON.parse(out) as { code: number | null; output: string };
}

test('a piped password: its hash in a device profile lets the device in with it, and not with another', { timeout: 60_000 }, async () => {
  const hashed = await hashOfPiped('sensor-17-secret\n');
  assert.equal(hashed.code, 0, hashed.stderr);
  const hash = hashed.stdout.trim();
  assert.ok(await verifyPassword('sensor-17-secret', hash));
  const root = tempDir();
  const profile = `name: s17\ncredentials:\n  - username: sensor-17\n    passwordHash: "${hash}"\n`;
  gw = await startFerry(['--config', writeGatewayTree(root, '{allowAnonymous: false}', { 's17.yaml': profile }), '--data-dir', join(root, 'data')]);
  const url = new URL(gw.mqttUrl);
  url.username = 'sensor-17';
  url.password = 'sensor-17-secret';
  const accepted = await mosquittoPub(url.toString(), 'devices/sensor-17/telemetry/t', '{}', { clientId: 'sensor-17' });
  assert.equal(accepted.code, 0, accepted.stderr);
  url.password = 'another';
  const refused = await mosquittoPub(url.toString(), 'devices/sensor-17/telemetry/t', '{}', { clientId: 'sensor-17' });
  assert.notEqual(refused.code, 0);
});

test('an empty piped password is refused', { timeout: 30_000 }, async () => {
  const result = await hashOfPiped('\n');
  assert.equal(result.code, 1);
  assert.equal(result.stderr, 'ferry: the password is empty\n');
});

test('in a terminal: typed twice, unseen, it prints the hash', { timeout: 30_000 }, async () => {
  const result = await inTerminal([
    ['Password: ', 'typed-secret\r'],
    ['Again: ', 'typed-secret\r'],
  ]);
  assert.equal(result.code, 0, result.output);
  assert.doesNotMatch(result.output, /typed-secret/);
  const hash = /scrypt\$\S+/.exec(result.output)?.[0] ?? '';
  assert.ok(await verifyPassword('typed-secret', hash), result.output);
});

for (const [what, steps, code, said] of [
  ['Ctrl-C at the first prompt', [['Password: ', '\u0003']], 130, ''],
  [
    'Ctrl-C at the second prompt',
    [
      ['Password: ', 'x\r'],
      ['Again: ', '\u0003'],
    ],
    130,
    '',
  ],
  ['Ctrl-D at the first prompt', [['Password: ', '\u0004']], 1, 'ferry: no password given'],
] as const) {
  test(`in a terminal: ${what} ends the command with ${code}`, { timeout: 30_000 }, async () => {
    const result = await inTerminal(steps);
    assert.equal(result.code, code, result.output);
    assert.doesNotMatch(result.output, /Warning|scrypt/);
    if (said !== '') assert.match(result.output, new RegExp(said));
  });
}
