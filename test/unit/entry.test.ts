import assert from 'node:assert/strict';
import { mkdirSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { BUILD_STAMP, chooseEntry } from '../../bin/entry.js';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-entry-');

/** A package root with the given files, each at the given modification time (seconds). */
function tree(files: Record<string, number>): string {
  const root = tempDir();
  for (const [path, mtime] of Object.entries(files)) {
    mkdirSync(join(root, path, '..'), { recursive: true });
    writeFileSync(join(root, path), '');
    utimesSync(join(root, path), mtime, mtime);
  }
  // Directories get an old time, so that only the files decide.
  for (const dir of ['src', 'src/cli', 'src/a', 'src/a/b', 'dist', 'dist/app/cli']) {
    try {
      utimesSync(join(root, dir), 1, 1);
    } catch {}
  }
  return root;
}

test('bin/ferry.js runs dist/ when a finished build is newer than every source, else src/ (issue 11)', () => {
  assert.equal(chooseEntry(tree({ 'src/cli/main.ts': 100 }), {}), 'src', 'no build');
  assert.equal(chooseEntry(tree({ 'src/cli/main.ts': 100, 'dist/app/cli/main.js': 200 }), {}), 'src', 'a build that did not finish (no stamp)');
  assert.equal(chooseEntry(tree({ 'src/cli/main.ts': 100, 'dist/app/cli/main.js': 200, [BUILD_STAMP]: 200 }), {}), 'dist', 'a current build');
  assert.equal(chooseEntry(tree({ 'src/cli/main.ts': 300, 'dist/app/cli/main.js': 200, [BUILD_STAMP]: 200 }), {}), 'src', 'a source edited after the build');
  assert.equal(
    chooseEntry(tree({ 'src/cli/main.ts': 100, 'src/a/b/deep.ts': 300, 'dist/app/cli/main.js': 200, [BUILD_STAMP]: 200 }), {}),
    'src',
    'a source edited two directories down',
  );
  assert.equal(chooseEntry(tree({ 'src/cli/main.ts': 100, 'dist/app/cli/main.js': 200, [BUILD_STAMP]: 200 }), { FERRY_FROM_SOURCE: '1' }), 'src', 'forced');
  assert.equal(chooseEntry(tree({ 'dist/app/cli/main.js': 200 }), {}), 'dist', 'an installed package: no sources');
});
