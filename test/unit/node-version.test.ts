import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { test } from 'node:test';
import { nodeVersionProblem } from '../../bin/node-version.js';
import { FERRY_BIN } from '../harness/ferry-process.ts';

test('Node.js older than 22.12 gets a clear error naming its version; 22.12 and newer run (issue 11)', () => {
  assert.match(nodeVersionProblem('20.20.2') ?? '', /^Ferry needs Node\.js 22\.12 or newer; this is 20\.20\.2\./);
  assert.match(nodeVersionProblem('22.11.0') ?? '', /this is 22\.11\.0/);
  for (const ok of ['22.12.0', '22.23.5', '24.0.0']) assert.equal(nodeVersionProblem(ok), undefined, ok);
});

test('bin/ferry.js on a Node older than 22.12 exits 1 with the message before anything native loads, not with a signal', () => {
  // process.versions.node made to say 20: the check is the first thing the CLI does.
  const pretend = "data:text/javascript,Object.defineProperty(process.versions,'node',{value:'20.20.2'})";
  const run = spawnSync(process.execPath, ['--import', pretend, FERRY_BIN, 'run'], { encoding: 'utf8' });
  assert.equal(run.signal, null);
  assert.equal(run.status, 1);
  assert.match(run.stderr, /^ferry: Ferry needs Node\.js 22\.12 or newer; this is 20\.20\.2\./);
  // And on a real old Node where the machine has one (Debian's is 20 here).
  if (existsSync('/usr/bin/node') && nodeVersionProblem(spawnSync('/usr/bin/node', ['-p', 'process.versions.node'], { encoding: 'utf8' }).stdout.trim()) !== undefined) {
    const old = spawnSync('/usr/bin/node', [FERRY_BIN, 'run'], { encoding: 'utf8' });
    assert.deepEqual([old.signal, old.status], [null, 1]);
    assert.match(old.stderr, /^ferry: Ferry needs Node\.js 22\.12 or newer/);
  }
});
