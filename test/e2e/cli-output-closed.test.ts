// A reader that stops reading the output of a command (`ferry history | head -1`) ended it with
// an EPIPE stack trace and exit code 1. Now the command ends quietly with 0, as `cat` does.
// Standard output failing otherwise (a full disk: /dev/full) is one line on stderr and exit 1,
// not a stack trace.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, test } from 'node:test';
import { createEnvelope } from '../../src/core/envelope.ts';
import { HistoryWriter } from '../../src/sqlite/history-store.ts';
import { FERRY_BIN, REPO_ROOT } from '../harness/ferry-process.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-output-closed-');
let dir: string;

before(async () => {
  dir = tempDir();
  writeFileSync(join(dir, 'gateway.yaml'), 'bridges: []\n');
  const writer = new HistoryWriter(dir, 'normal');
  const readings = Array.from({ length: 5000 }, (_, i) =>
    createEnvelope({ topic: `devices/d1/telemetry/${i}`, payload: JSON.stringify({ i, pad: 'x'.repeat(100) }), origin: { source: 'test', clientId: 'd1' } }),
  );
  await writer.append('b', readings, 1_000_000);
  writer.close();
});

/** Runs `ferry <args>` and closes its standard output after the first chunk, as `head -1` does. */
async function closedAfterFirstChunk(args: readonly string[]): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, [FERRY_BIN, ...args], { cwd: REPO_ROOT, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const kill = () => {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) process.kill(-child.pid, 'SIGKILL');
  };
  process.once('exit', kill);
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  child.stdout.once('data', () => child.stdout.destroy());
  const timer = setTimeout(kill, 20_000);
  try {
    const [code] = (await once(child, 'exit')) as [number | null];
    return { code, stderr };
  } finally {
    clearTimeout(timer);
    process.off('exit', kill);
  }
}

for (const args of [
  ['history', '-n', '5000'],
  ['history', '-n', '5000', '--json'],
  ['history', '-n', '5000', '--follow'],
]) {
  test(`ferry ${args.join(' ')} | head: exits 0 without a word on stderr`, { timeout: 30_000 }, async () => {
    const result = await closedAfterFirstChunk([...args, '--config', join(dir, 'gateway.yaml'), '--data-dir', dir]);
    assert.equal(result.stderr, '');
    assert.equal(result.code, 0);
  });
}

/** Runs `ferry <args>` with its standard output on /dev/full, where every write fails with ENOSPC. */
function toFullDisk(args: readonly string[]): { status: number | null; stderr: string } {
  const full = openSync('/dev/full', 'w');
  try {
    const r = spawnSync(process.execPath, [FERRY_BIN, ...args], { cwd: REPO_ROOT, stdio: ['ignore', full, 'pipe'], encoding: 'utf8', timeout: 30_000 });
    return { status: r.status, stderr: r.stderr };
  } finally {
    closeSync(full);
  }
}

for (const args of [
  ['history', '-n', '5000'],
  ['config', 'schema'],
]) {
  test(`ferry ${args.join(' ')} > /dev/full: one line on stderr, exit 1`, { timeout: 40_000 }, () => {
    const extra = args[0] === 'history' ? ['--config', join(dir, 'gateway.yaml'), '--data-dir', dir] : [];
    const { status, stderr } = toFullDisk([...args, ...extra]);
    assert.equal(status, 1, stderr);
    assert.match(stderr, /^ferry: cannot write standard output: .*ENOSPC.*\n$/);
  });
}
