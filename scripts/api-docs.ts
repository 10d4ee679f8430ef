// Writes docs/api/ from the declarations in dist/ (npm run docs:api builds first). With --check
// it writes nothing and exits 1 when a page is out of date; test/unit/docs/api.test.ts checks the same.
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { apiPages } from './api/pages.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const DIR = join(ROOT, 'docs/api');
const pages = apiPages(ROOT);
mkdirSync(DIR, { recursive: true });
const read = (path: string) => {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
};
const stale = [...pages].filter(([path, text]) => read(join(DIR, path)) !== text).map(([path]) => path);
const extra = readdirSync(DIR).filter((f) => f.endsWith('.md') && !pages.has(f));
if (process.argv.includes('--check')) {
  for (const path of [...stale, ...extra]) process.stderr.write(`docs/api/${path} is out of date\n`);
  process.exitCode = stale.length + extra.length === 0 ? 0 : 1;
} else {
  for (const path of stale) writeFileSync(join(DIR, path), pages.get(path) as string);
  for (const path of extra) rmSync(join(DIR, path));
  process.stdout.write(`docs/api: ${pages.size} pages, ${stale.length} written, ${extra.length} removed\n`);
}
