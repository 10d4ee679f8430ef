import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { apiPages } from '../../../scripts/api/pages.ts';
import { ensureBuilt } from '../../harness/build.ts';
import { REPO_ROOT } from '../../harness/ferry-process.ts';

test('docs/api/ is what `npm run docs:api` makes from the declarations of every package entry point', () => {
  ensureBuilt();
  const pages = apiPages(REPO_ROOT);
  const dir = join(REPO_ROOT, 'docs/api');
  assert.deepEqual(readdirSync(dir).sort(), [...pages.keys()].sort(), 'run npm run docs:api');
  for (const [path, text] of pages) assert.equal(readFileSync(join(dir, path), 'utf8'), text, `docs/api/${path} is out of date: run npm run docs:api`);
});
