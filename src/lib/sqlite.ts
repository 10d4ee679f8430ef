/**
 * The local message history (SQLite) as a sink, and SQLite files as typed databases, for use
 * outside the gateway: `import { toHistory, readHistory, sqliteDatabase } from 'ferry/sqlite'`.
 * The same sink as a bridge's `history:` entry, the same database as a handler's `tools.database(name)`.
 */
import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { Kysely } from 'kysely';
import type { z } from 'zod';
import { FerryError } from '../core/errors.ts';
import type { Sink } from '../core/stream.ts';
import { historySink } from '../sqlite/history-sink.ts';
import { HISTORY_FILE, type HistoryRow, HistoryReader, historyPath } from '../sqlite/history-store.ts';
import { sqliteDatabaseSchema } from '../sqlite/database-schema.ts';
import { sqliteDialect } from '../sqlite/kysely.ts';
import { type StreamOptions, sinkOf, validated } from './component.ts';

export type { Kysely } from 'kysely';
export type { Delivery } from '../core/delivery.ts';
export type { Envelope } from '../core/envelope.ts';
export type { Sink, SinkEvent, Source } from '../core/stream.ts';
export type { HistoryRow } from '../sqlite/history-store.ts';
export type { StreamOptions } from './component.ts';

/** The options of `toHistory`: a bridge's `history:` sink's (docs/reference/sinks/history.md), and the directory of `history.db`. */
export type HistorySinkConfig = z.input<typeof historySink.schema> & { readonly dir: string };

/**
 * An operator writing each delivery to `<dir>/history.db`, keeping the newest `keep` of the
 * stream's name (`options.name`), acked after the commit (fsync'd with `synchronous: full`).
 */
export function toHistory(config: HistorySinkConfig, options?: StreamOptions): Sink {
  const { dir, ...sinkConfig } = config;
  return sinkOf(historySink, sinkConfig, options, resolve(dir));
}

/**
 * The newest `limit` messages in `<dir>/history.db` (of one stream name when given), oldest
 * first. Throws a STORAGE_FAILED FerryError naming the path when there is no such file.
 */
export function readHistory(dir: string, query: { readonly name?: string; readonly limit?: number } = {}): HistoryRow[] {
  const at = resolve(dir);
  const missing = missingHistory(at);
  if (missing !== undefined) throw new FerryError('STORAGE_FAILED', `readHistory: no history at ${historyPath(at)}: ${missing}`, { component: 'history' });
  const reader = new HistoryReader(at);
  try {
    return reader.latest({ limit: query.limit ?? 100, ...(query.name === undefined ? {} : { bridge: query.name }) });
  } finally {
    reader.close();
  }
}

/** Why `dir` holds no history file, undefined when it does (better-sqlite3's own errors name no path). */
function missingHistory(dir: string): string | undefined {
  const stat = statSync(dir, { throwIfNoEntry: false });
  if (stat === undefined) return `the directory ${dir} does not exist`;
  if (!stat.isDirectory()) return `${dir} is not a directory`;
  if (!existsSync(historyPath(dir))) return `${dir} has no ${HISTORY_FILE} (toHistory, or a gateway's history sink, writes it)`;
  return undefined;
}

/** The options of `sqliteDatabase`: a `databases:` entry's `sqlite:` (the file, `synchronous`, `busyTimeoutMs`). */
export type SqliteDatabaseConfig = z.input<ReturnType<typeof sqliteDatabaseSchema>>;

/**
 * A typed Kysely instance over a SQLite file (better-sqlite3, WAL), as a handler's
 * `tools.database(name)` gives for a `sqlite:` database: transactions begin IMMEDIATE, so
 * several processes on one file take turns instead of failing. A relative `file` is relative
 * to `dir` (the working directory unless given). `destroy()` closes the file.
 */
export function sqliteDatabase<DB>(config: SqliteDatabaseConfig, options: { readonly dir?: string } = {}): Kysely<DB> {
  const parsed = validated('sqlite', sqliteDatabaseSchema(), config);
  return new Kysely<DB>({ dialect: sqliteDialect(parsed, resolve(options.dir ?? '.')) });
}
