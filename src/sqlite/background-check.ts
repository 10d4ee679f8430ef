import { type ChildProcess, spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { READ_AHEAD_BYTES, isCorruption, tryMarkForCheck } from './open-checked.ts';

export type BackgroundCheckResult =
  | { readonly outcome: 'ok'; readonly ms: number }
  /** `PRAGMA quick_check` found the database corrupt; the marker (when it could be written) makes the next open check it in full. */
  | { readonly outcome: 'corrupt'; readonly detail: string; readonly marked: boolean; readonly ms: number }
  /** The check could not run to the end (the process failed, or could not read the file). */
  | { readonly outcome: 'failed'; readonly detail: string; readonly ms: number }
  /** stop() ended it first. */
  | { readonly outcome: 'stopped'; readonly ms: number };

export interface BackgroundCheck {
  readonly done: Promise<BackgroundCheckResult>;
  /** Kills the check (a stop of the gateway does not wait for it). */
  stop(): void;
}

/**
 * What the checking process runs: `PRAGMA quick_check` on a read-only connection of its own,
 * which reads a snapshot of the database while the gateway goes on writing, and prints the result
 * as one JSON line. A small page cache: the check reads every page once. The file is read
 * from start to end first when it fits in half the memory available, as `quickCheck` does (readAhead).
 */
const CHECK = `
const Database = require(process.argv[1]);
const fs = require('node:fs');
let db;
try {
  db = new Database(process.argv[2], { readonly: true, fileMustExist: true });
  db.pragma('busy_timeout = 5000');
  db.pragma('cache_size = -2048');
  const fd = fs.openSync(process.argv[2], 'r');
  try {
    if (fs.fstatSync(fd).size <= require('node:os').freemem() / 2) {
      const block = Buffer.allocUnsafe(${READ_AHEAD_BYTES});
      while (fs.readSync(fd, block, 0, block.length, null) > 0);
    }
  } finally {
    fs.closeSync(fd);
  }
  const rows = db.pragma('quick_check');
  process.stdout.write(JSON.stringify({ result: rows.map((r) => r.quick_check).join('; ') }) + '\\n');
} catch (error) {
  process.stdout.write(JSON.stringify({ error: String(error && error.message), code: error && error.code }) + '\\n');
} finally {
  if (db) db.close();
}
`;

/**
 * Checks a database's integrity in a process of its own, so that neither the event loop nor the
 * gateway's memory pays for reading every page (a worker thread would keep about 12 MB of its
 * memory after it ended). A corrupt database gets the marker that makes its next open check it
 * in full, and so move it aside.
 */
export function checkInBackground(path: string): BackgroundCheck {
  const started = performance.now();
  const elapsed = () => Math.round(performance.now() - started);
  const betterSqlite = createRequire(import.meta.url).resolve('better-sqlite3');
  let child: ChildProcess | undefined;
  let stopped = false;
  const done = new Promise<BackgroundCheckResult>((resolve) => {
    child = spawn(process.execPath, ['-e', CHECK, betterSqlite, path], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString();
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      err += chunk.toString();
    });
    child.once('error', (error) => resolve({ outcome: 'failed', detail: error.message, ms: elapsed() }));
    child.once('close', (code, signal) => {
      if (stopped) return resolve({ outcome: 'stopped', ms: elapsed() });
      let reply: { result?: string; error?: string; code?: string } | undefined;
      try {
        reply = JSON.parse(out) as typeof reply;
      } catch {
        reply = undefined;
      }
      if (reply?.result === 'ok') return resolve({ outcome: 'ok', ms: elapsed() });
      if (reply?.result !== undefined || isCorruption({ code: reply?.code })) {
        // quick_check lists up to 100 problems: the first ones tell enough.
        const detail = (reply?.result ?? `${reply?.code}: ${reply?.error}`).slice(0, 500);
        const notMarked = tryMarkForCheck(path, detail);
        if (notMarked === undefined) return resolve({ outcome: 'corrupt', detail, marked: true, ms: elapsed() });
        return resolve({ outcome: 'corrupt', detail: `${detail} (not marked: ${notMarked.message})`, marked: false, ms: elapsed() });
      }
      const detail = reply?.error ?? (err.trim().split('\n').at(-1) || `the check exited with ${signal ?? code}`);
      resolve({ outcome: 'failed', detail, ms: elapsed() });
    });
  });
  return {
    done,
    stop: () => {
      stopped = true;
      child?.kill('SIGKILL');
    },
  };
}
