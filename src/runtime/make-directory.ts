import { mkdirSync, statSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * Creates `dir` and its missing parents, one level at a time. `mkdirSync(dir, { recursive: true })`
 * loops for ever where mkdir of a child fails with ENOENT although its parent exists (under
 * /proc: `ferry run --data-dir /proc/nope` hung without a word); here that is an error naming the
 * parent. Throws an Error with one line saying what is wrong.
 */
export function makeDirectory(dir: string): void {
  try {
    mkdirSync(dir);
    return;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') {
      if (!statSync(dir).isDirectory()) throw new Error(`${dir} exists and is not a directory`);
      return;
    }
    if (code !== 'ENOENT') throw error;
  }
  const parent = dirname(dir);
  if (parent === dir) throw new Error(`cannot create ${dir}`);
  makeDirectory(parent);
  try {
    mkdirSync(dir);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' && statSync(dir).isDirectory()) return;
    if (code === 'ENOENT') throw new Error(`cannot create ${dir}: ${parent} takes no new directories (mkdir: ENOENT)`);
    throw error;
  }
}
