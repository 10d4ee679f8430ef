import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { ferry } from '../../harness/ferry-process.ts';
import { tempDirs } from '../../harness/temp.ts';

const tempDir = tempDirs('ferry-bridge-cache-');

test('TypeScript bridges are kept with their types stripped, by content: a second load reads the cache, and errors keep their line and column', async () => {
  const root = tempDir();
  const cache = join(root, 'cache');
  mkdirSync(join(root, 'bridges'));
  writeFileSync(join(root, 'gateway.yaml'), 'bridges: [bridges]\ndevices: []\n');
  // Types before the throw, so that a wrong strip would move it; an ES module, as bridges are.
  writeFileSync(
    join(root, 'bridges/throws.ts'),
    "type Site = { name: string };\nconst site: Site = { name: 'x' };\nif (site.name === 'x') throw new Error('sites file missing');\nexport {};\n",
  );
  const env = { FERRY_CACHE_DIR: cache };
  const first = await ferry(['validate', '--config', join(root, 'gateway.yaml')], env);
  assert.equal(first.code, 1);
  assert.match(first.stderr, /bridges\/throws\.ts:3:30: cannot load this TypeScript bridge: Error: sites file missing$/m);
  const files = readdirSync(join(cache, 'bridges'));
  assert.equal(files.length, 1);
  assert.match(readFileSync(join(cache, 'bridges', files[0] as string), 'utf8'), /^ {29}\nconst site {7}= \{ name: 'x' \};/);
  // The cached text is what is imported: changed there, the error changes.
  const cached = join(cache, 'bridges', files[0] as string);
  writeFileSync(cached, readFileSync(cached, 'utf8').replace('sites file missing', 'read from the cache'));
  const second = await ferry(['validate', '--config', join(root, 'gateway.yaml')], env);
  assert.match(second.stderr, /bridges\/throws\.ts:3:30: cannot load this TypeScript bridge: Error: read from the cache$/m);
  assert.doesNotMatch(first.stderr + second.stderr, /ExperimentalWarning/);
});

test('the TypeScript modules a bridge imports are kept stripped too, by content; files under node_modules are left to Node', async () => {
  const root = tempDir();
  const cache = join(root, 'cache');
  mkdirSync(join(root, 'bridges/lib'), { recursive: true });
  writeFileSync(join(root, 'gateway.yaml'), 'bridges: [bridges/throws.ts]\ndevices: []\n');
  writeFileSync(join(root, 'bridges/lib/sites.ts'), 'export function site(name: string): string {\n  return `site ${name}`;\n}\n');
  writeFileSync(join(root, 'bridges/throws.ts'), "import { site } from './lib/sites.ts';\nconst name: string = site('a');\nthrow new Error(name);\n");
  const env = { FERRY_CACHE_DIR: cache };
  const first = await ferry(['validate', '--config', join(root, 'gateway.yaml')], env);
  assert.match(first.stderr, /bridges\/throws\.ts:3:7: cannot load this TypeScript bridge: Error: site a$/m);
  const files = readdirSync(join(cache, 'bridges'));
  assert.equal(files.length, 2, files.join(', '));
  const helper = files.map((f) => join(cache, 'bridges', f)).find((f) => readFileSync(f, 'utf8').includes('export function site'));
  assert.ok(helper !== undefined);
  assert.match(readFileSync(helper, 'utf8'), /^export function site\(name {8}\) {9}\{$/m);
  // The cached helper is what is imported.
  writeFileSync(helper, readFileSync(helper, 'utf8').replace('`site ${name}`', '`cached ${name}`'));
  const second = await ferry(['validate', '--config', join(root, 'gateway.yaml')], env);
  assert.match(second.stderr, /Error: cached a$/m);
  assert.equal(readdirSync(join(cache, 'bridges')).length, 2);
});
