import { existsSync } from 'node:fs';
import { bufferPath } from '../../buffer/open.ts';
import { legacyRows } from '../../buffer/schema.ts';
import { BufferStore } from '../../buffer/store.ts';
import { describeError } from '../../core/errors.ts';
import { openSqlite } from '../../sqlite/connection.ts';
import { type DataDirOptions, resolveDataDir } from '../load.ts';

/** A failure the command describes itself (an unknown bridge, an unwritable output file): printed as is. */
export class CommandError extends Error {}

/**
 * `read` never blocks the gateway (a WAL reader); `write` takes the write lock only for its
 * transactions (waiting up to the busy timeout) and commits with synchronous=FULL.
 */
export type Access = 'read' | 'write';

/**
 * Runs `use` on the buffer of the data directory the options name, then closes it. Every
 * failure (no buffer there, a bad request, a SQLite error) is printed as one line and sets
 * exit code 1.
 */
export async function withBuffer(options: DataDirOptions, access: Access, use: (store: BufferStore, path: string) => void | Promise<void>): Promise<void> {
  const path = existingBufferPath(options);
  if (path === undefined) return;
  let store: BufferStore | undefined;
  try {
    const db = openSqlite(path, access === 'read' ? { readonly: true } : { synchronous: 'full' });
    // A buffer of an earlier version is converted on a writing command's open (BufferLog): said first, as it takes a while.
    const legacy = access === 'write' ? legacyRows(db) : 0;
    if (legacy > 0) process.stderr.write(`converting the ${legacy.toLocaleString('en-US')} messages of an earlier version's buffer into packs (about 7 s a million)...\n`);
    store = new BufferStore(db);
    await use(store, path);
  } catch (error) {
    fail(error instanceof CommandError ? error.message : `${path}: ${describeError(error)}`);
  } finally {
    store?.close();
  }
}

/** buffer.db of the data directory the options name; undefined, with the reason printed and exit code 1, when there is none. */
export function existingBufferPath(options: DataDirOptions): string | undefined {
  const dataDir = resolveDataDir(options);
  if (dataDir === undefined) {
    process.exitCode = 1;
    return undefined;
  }
  const path = bufferPath(dataDir);
  if (!existsSync(path)) {
    fail(`no buffer at ${path} (is it the gateway's data directory? \`ferry run\` creates it)`);
    return undefined;
  }
  const foreign = notABuffer(path);
  if (foreign === undefined) return path;
  fail(foreign);
  return undefined;
}

/** Tables that every Ferry buffer has, of this version and of earlier ones. */
const BUFFER_TABLES = ['cursors', 'dead_letters'];

/**
 * Why the SQLite file at `path` is not a Ferry buffer (an empty database, or another program's),
 * or undefined. Asked on a read-only connection: a writing command opened it writable, and
 * BufferStore wrote Ferry's tables into it.
 */
function notABuffer(path: string): string | undefined {
  return notFerrys(path, 'a Ferry buffer', (tables) => BUFFER_TABLES.every((table) => tables.includes(table)), '`ferry run` creates the buffer there');
}

/**
 * Why the SQLite file at `path` is not `what` (an empty database, or another program's): its
 * tables, read on a read-only connection, do not pass `ours`. Undefined when they do, and for a
 * file SQLite cannot read as a database at all, which is left to the command's own open (that
 * marks it corrupt, as the gateway would find it).
 */
export function notFerrys(path: string, what: string, ours: (tables: readonly string[]) => boolean, where: string): string | undefined {
  let tables: string[];
  try {
    const db = openSqlite(path, { readonly: true });
    try {
      tables = db.prepare<[], string>("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").pluck().all();
    } finally {
      db.close();
    }
  } catch {
    return undefined;
  }
  if (ours(tables)) return undefined;
  const shown = tables.slice(0, 5).join(', ') + (tables.length > 5 ? ', ...' : '');
  const found = tables.length === 0 ? 'it has no tables (an empty database)' : `its tables (${shown}) are not Ferry's`;
  return `${path} is not ${what}: ${found} (is it the gateway's data directory? ${where})`;
}

/** Throws a CommandError naming the bridges there when the buffer has no bridge of that name. */
export function requireBridge(store: BufferStore, bridge: string, path: string): void {
  const bridges = store.bridges();
  if (bridges.includes(bridge)) return;
  throw new CommandError(`no bridge '${bridge}' in ${path} (${bridges.length === 0 ? 'it has none' : `it has ${bridges.join(', ')}`})`);
}

export function fail(message: string): void {
  process.stderr.write(`ferry: ${message}\n`);
  process.exitCode = 1;
}
