import { readFileSync } from 'node:fs';

/**
 * The process's limit on open files (the soft RLIMIT_NOFILE, what `ulimit -n` shows; Node
 * raises it to the hard limit at startup), read from /proc/self/limits. Undefined where that
 * file does not exist (not Linux) or the limit is unlimited.
 */
export function openFileLimit(path = '/proc/self/limits'): number | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
  const line = text.split('\n').find((l) => l.startsWith('Max open files'));
  const soft = Number(line?.slice('Max open files'.length).trim().split(/\s+/)[0]);
  return Number.isSafeInteger(soft) && soft > 0 ? soft : undefined;
}
