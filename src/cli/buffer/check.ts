import { statSync } from 'node:fs';
import { describeError } from '../../core/errors.ts';
import { openSqlite } from '../../sqlite/connection.ts';
import { isCorruption, markForCheck, quickCheck } from '../../sqlite/open-checked.ts';
import type { DataDirOptions } from '../load.ts';
import { existingBufferPath, fail } from './open.ts';
import { formatBytes } from './format.ts';

/**
 * `ferry buffer check`: SQLite's `PRAGMA quick_check` of buffer.db on a read-only connection (it
 * reads every page; a running gateway goes on meanwhile). A corrupt buffer gets the mark that
 * makes the next `ferry run` check it before it starts and move it aside; exit code 1.
 */
export function checkCommand(options: DataDirOptions): void {
  const path = existingBufferPath(options);
  if (path === undefined) return;
  const size = formatBytes(statSync(path).size);
  if (process.stderr.isTTY) process.stderr.write(`checking ${path} (${size}; every page is read)...\n`);
  const started = performance.now();
  let problems: string;
  try {
    const db = openSqlite(path, { readonly: true });
    try {
      problems = quickCheck(db);
    } finally {
      db.close();
    }
  } catch (error) {
    if (!isCorruption(error)) {
      fail(`${path}: ${describeError(error)}`);
      return;
    }
    problems = describeError(error);
  }
  const ms = Math.round(performance.now() - started);
  if (problems === 'ok') {
    process.stdout.write(`ok: ${path} (${size}, checked in ${ms} ms)\n`);
    return;
  }
  markForCheck(path, `ferry buffer check: ${problems.slice(0, 500)}`);
  fail(
    `${path} is corrupt: ${problems.slice(0, 500)}\nThe next \`ferry run\` moves it aside (kept for inspection) and starts an empty one; messages it holds are then not delivered (\`ferry buffer export\` may still read some).`,
  );
}
