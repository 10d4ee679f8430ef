import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { chooseEntry } from '../../bin/entry.js';
import { REPO_ROOT } from './ferry-process.ts';

/**
 * dist/ as `npm run build` (or `npm ci`, through `prepare`) leaves it; built here when it is
 * missing or older than src/ (a checkout being edited). Tests of the compiled build, the
 * package and the examples call it first.
 */
export function ensureBuilt(): void {
  if (chooseEntry(REPO_ROOT, {}) === 'dist') return;
  const build = spawnSync(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'scripts/build.ts')], { cwd: REPO_ROOT, encoding: 'utf8' });
  assert.equal(build.status, 0, `npm run build failed:\n${build.stdout}${build.stderr}`);
  assert.equal(chooseEntry(REPO_ROOT, {}), 'dist');
}
