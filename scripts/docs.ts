// Writes docs/reference/ from the code (npm run docs): the config files' reference, a page per
// source, sink and transform step, the metrics catalogue and the CLI. With --check it writes
// nothing and exits 1 when a page is out of date; test/unit/docs/reference.test.ts checks the same.
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { referencePages } from './docs/pages.ts';

const ROOT = fileURLToPath(new URL('../docs/reference/', import.meta.url));
const check = process.argv.includes('--check');
const pages = referencePages();
mkdirSync(ROOT, { recursive: true });
const existing = readdirSync(ROOT, { recursive: true, encoding: 'utf8' })
  .filter((f) => f.endsWith('.md'))
  .map((f) => f.split('\\').join('/'));
const stale = [...pages].filter(([path, text]) => read(join(ROOT, path)) !== text).map(([path]) => path);
const extra = existing.filter((path) => !pages.has(path));

if (check) {
  for (const path of [...stale, ...extra]) process.stderr.write(`docs/reference/${path} is out of date\n`);
  process.exitCode = stale.length + extra.length === 0 ? 0 : 1;
} else {
  for (const path of stale) {
    mkdirSync(dirname(join(ROOT, path)), { recursive: true });
    writeFileSync(join(ROOT, path), pages.get(path) as string);
  }
  // A page of a kind that is gone would otherwise stay, describing nothing.
  for (const path of extra) rmSync(join(ROOT, path));
  process.stdout.write(`docs/reference: ${pages.size} pages, ${stale.length} written, ${extra.length} removed\n`);
}

function read(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}
