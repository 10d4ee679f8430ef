// Which build of Ferry's CLI `ferry` runs: the compiled one in dist/ (what `npm run build`, and
// `npm install` through `prepare`, emit) or the TypeScript sources in src/. An installed
// package has only dist/; a checkout being edited has both, and a dist/ older than the sources
// would run yesterday's code, so the sources win until the next build. Plain JavaScript, so
// that it runs before any loader is registered.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** Written by scripts/build.ts when a build completed: its modification time is the build's. */
export const BUILD_STAMP = 'dist/.build-stamp';

/**
 * 'dist' or 'src' for the package at `root` (a directory path). `FERRY_FROM_SOURCE=1` forces
 * the sources. The check stats every file under src/ (about 270): ~2 ms.
 */
export function chooseEntry(root, env = process.env) {
  const sources = join(root, 'src');
  if (!existsSync(join(root, 'dist', 'app', 'cli', 'main.js'))) return 'src';
  if (!existsSync(sources)) return 'dist';
  if (env.FERRY_FROM_SOURCE === '1') return 'src';
  let built;
  try {
    built = statSync(join(root, BUILD_STAMP)).mtimeMs;
  } catch {
    return 'src'; // a build that did not finish
  }
  return newestChange(sources) > built ? 'src' : 'dist';
}

/**
 * The latest modification time of anything under `dir` (files, and directories for deletions).
 * A walk of its own rather than readdirSync's `recursive`, which took four times as long (about
 * 10 ms of every start of a checkout).
 */
function newestChange(dir) {
  let newest = statSync(dir).mtimeMs;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = `${dir}/${entry.name}`;
    const mtime = entry.isDirectory() ? newestChange(path) : statSync(path).mtimeMs;
    if (mtime > newest) newest = mtime;
  }
  return newest;
}
