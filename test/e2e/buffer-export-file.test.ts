// `ferry buffer export --output FILE` wrote into FILE as it went: Ctrl-C (or a failure) half-way
// left a file of whole lines that looked like a complete export, and an earlier export of that
// name was gone from the start. Now it writes FILE.partial and renames it when done.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { bufferPath } from '../../src/buffer/open.ts';
import { BufferStore } from '../../src/buffer/store.ts';
import { createEnvelope } from '../../src/core/envelope.ts';
import { openSqlite } from '../../src/sqlite/connection.ts';
import { ferry, spawnFerryGroup } from '../harness/ferry-process.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-export-file-');
const MESSAGES = 200_000;

function bufferOf(messages: number): string {
  const dir = tempDir();
  const store = new BufferStore(openSqlite(bufferPath(dir), { synchronous: 'normal' }));
  store.registerBridge('b', ['x']);
  const payload = 'p'.repeat(300);
  for (let i = 0; i < messages; i += 10_000) {
    store.append(
      Array.from({ length: Math.min(10_000, messages - i) }, (_, j) => ({ bridge: 'b', envelope: createEnvelope({ topic: `t/${i + j}`, payload, origin: { source: 'mqtt' } }) })),
    );
  }
  store.close();
  return dir;
}

const sizeOf = (file: string) => (existsSync(file) ? statSync(file).size : 0);

test('Ctrl-C during an export to a file leaves the earlier file of that name as it was, and no partial file', { timeout: 120_000 }, async () => {
  const dir = bufferOf(MESSAGES);
  const file = join(dir, 'backlog.jsonl');
  writeFileSync(file, 'the earlier export\n');
  const run = spawnFerryGroup(['buffer', 'export', '--data-dir', dir, '--output', file]);
  const { child } = run;
  const exited = once(child, 'exit');
  try {
    // Half-way: a few MB written (the whole export is about 80 MB).
    while (child.exitCode === null && Math.max(sizeOf(file), sizeOf(`${file}.partial`)) < 4_000_000) await sleep(5);
    assert.equal(child.exitCode, null, 'the export ended before it could be interrupted');
    child.kill('SIGINT');
    const [code] = (await exited) as [number | null];
    assert.equal(code, 130, run.stderr());
    assert.equal(readFileSync(file, 'utf8'), 'the earlier export\n');
    assert.equal(existsSync(`${file}.partial`), false);
    assert.match(run.stderr(), /export stopped by SIGINT; \S+backlog\.jsonl was not written\n$/);
  } finally {
    run.stop();
  }
});

test('a complete export to a file replaces the earlier one and leaves no partial file', { timeout: 60_000 }, async () => {
  const dir = bufferOf(3);
  const file = join(dir, 'backlog.jsonl');
  writeFileSync(file, 'the earlier export\n');
  const result = await ferry(['buffer', 'export', '--data-dir', dir, '--output', file]);
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stderr, `exported 3 messages to ${file}\n`);
  assert.deepEqual(
    readFileSync(file, 'utf8')
      .trimEnd()
      .split('\n')
      .map((l) => (JSON.parse(l) as { topic: string }).topic),
    ['t/0', 't/1', 't/2'],
  );
  assert.equal(existsSync(`${file}.partial`), false);

  const nowhere = await ferry(['buffer', 'export', '--data-dir', dir, '--output', join(dir, 'no-such-dir', 'x.jsonl')]);
  assert.equal(nowhere.code, 1);
  assert.match(nowhere.stderr, /^ferry: cannot write \S+x\.jsonl: ENOENT/);
});
