// `ferry run --data-dir /proc/nope` spun for ever without a word: Node's
// `mkdirSync(dir, { recursive: true })` loops where mkdir of a child fails with ENOENT although
// its parent exists (as under /proc), and the data directory's lock created it so; `ferry
// migrate create --dir` did the same. Now each says in one line which directory it cannot
// create, and exits.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { ferryWithin } from '../harness/ferry-process.ts';
import { writeGatewayTree } from '../harness/gateway-tree.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-data-dir-unusable-');
const config = () => writeGatewayTree(tempDir(), '{allowAnonymous: true}', {});

/** The built CLI in a process group of its own, killed after 20 s (it hung): its exit code and output. */
const ferryBounded = (args: readonly string[]) => ferryWithin(args, 20_000);

test('ferry run --data-dir under /proc exits 1 with one line naming the directory it cannot create', { timeout: 60_000 }, async () => {
  for (const dataDir of ['/proc/ferry-nope', '/proc/ferry-nope/data']) {
    const result = await ferryBounded(['run', '--config', config(), '--mqtt-port', '0', '--admin-port', '0', '--data-dir', dataDir]);
    assert.equal(result.code, 1, `still running after 20 s or another exit: ${result.stderr}`);
    assert.equal(
      result.stderr,
      `ferry: cannot start: data directory ${dataDir}: cannot create /proc/ferry-nope: /proc takes no new directories (mkdir: ENOENT) (choose it with --data-dir or gateway.dataDir)\n`,
    );
    assert.ok(!result.stdout.includes('accepting MQTT connections'));
  }
});

test('ferry migrate create --dir with missing parents creates them, level by level', { timeout: 60_000 }, async () => {
  const nested = join(tempDir(), 'x', 'y', 'migrations');
  const created = await ferryBounded(['migrate', 'create', 'first', '--dir', nested]);
  assert.equal(created.code, 0, created.stderr);
  assert.ok(existsSync(nested));
});

test('ferry migrate create --dir under /proc exits 3 (its code for a wrong --dir) with one line', { timeout: 60_000 }, async () => {
  const result = await ferryBounded(['migrate', 'create', 'first', '--dir', '/proc/ferry-nope/migrations']);
  assert.equal(result.code, 3, `still running after 20 s or another exit: ${result.stderr}`);
  assert.equal(result.stderr, 'ferry migrate create: cannot create /proc/ferry-nope: /proc takes no new directories (mkdir: ENOENT)\n');
});
