// `npm run build` (and `prepare`, so that `npm install` from a git checkout builds too):
// compiles src/ to JavaScript and declarations in dist/ with the TypeScript compiler, copies
// the files that are not TypeScript (the status page), and stamps the build last, so that
// bin/ferry.js runs dist/ only after a build that finished (see bin/entry.js).
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const dist = join(root, 'dist');

rmSync(dist, { recursive: true, force: true });
const tsc = join(dirname(createRequire(import.meta.url).resolve('typescript/package.json')), 'bin', 'tsc');
const compiled = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], { stdio: 'inherit' });
if (compiled.status !== 0) {
  process.stderr.write(`build: the TypeScript compiler failed (exit ${compiled.status ?? compiled.signal}); dist/ is incomplete and bin/ferry.js keeps running src/\n`);
  process.exit(1);
}
let assets = 0;
for (const entry of readdirSync(join(root, 'src'), { recursive: true, withFileTypes: true })) {
  if (!entry.isFile() || entry.name.endsWith('.ts')) continue;
  const from = join(entry.parentPath, entry.name);
  const to = join(dist, from.slice(join(root, 'src').length));
  mkdirSync(dirname(to), { recursive: true });
  cpSync(from, to);
  assets++;
}
writeFileSync(join(dist, '.build-stamp'), `${new Date().toISOString()}\n`);
process.stdout.write(`build: dist/ written (${assets} asset file(s) copied)\n`);
