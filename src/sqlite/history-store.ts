import { join } from 'node:path';
import type Database from 'better-sqlite3';
import type { Envelope } from '../core/envelope.ts';
import { INSERT_ROWS, openSqlite, type Synchronous, valuesList } from './connection.ts';
import { type Fdatasync, WalSync, walSyncFailure } from './wal-sync.ts';

export const HISTORY_FILE = 'history.db';

export interface HistoryRow {
  readonly seq: number;
  readonly id: string;
  readonly bridge: string;
  readonly topic: string;
  readonly clientId: string | null;
  readonly qos: number | null;
  readonly payload: Buffer;
  readonly receivedAt: number;
}

export function historyPath(dataDir: string): string {
  return join(dataDir, HISTORY_FILE);
}

const schema = `
CREATE TABLE IF NOT EXISTS history (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  bridge TEXT NOT NULL,
  topic TEXT NOT NULL,
  client_id TEXT,
  qos INTEGER,
  payload BLOB NOT NULL,
  received_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS history_bridge_seq ON history (bridge, seq);
-- The rows each bridge has in history, kept with them in the same transactions.
CREATE TABLE IF NOT EXISTS history_counts (bridge TEXT PRIMARY KEY, rows INTEGER NOT NULL) WITHOUT ROWID;
`;

/**
 * The gateway's local message history: the latest messages of each bridge that writes to
 * it, kept on disk so that `ferry history` and operators can see what devices sent.
 */
export class HistoryWriter {
  readonly #path: string;
  readonly #db: Database.Database;
  readonly #append: (bridge: string, envelopes: readonly Envelope[], keep: number) => void;
  /** Bridges whose rows this writer counted: their stored count is then trusted. */
  readonly #counted = new Set<string>();
  /**
   * Under `full`, what makes an append durable before it resolves: the connection commits
   * without an fsync and this syncs the WAL on the thread pool, as the buffer's writer does
   * (wal-sync.ts); the event loop goes on meanwhile. Undefined under `normal`.
   */
  readonly #walSync: WalSync | undefined;

  /** `options.fdatasync`: for a test, the fdatasync of a failing disk. */
  constructor(dataDir: string, synchronous: Synchronous, options: { fdatasync?: Fdatasync } = {}) {
    const path = historyPath(dataDir);
    this.#path = path;
    // A file whose WAL failed to sync is not written again until the process restarts and
    // SQLite recovers it from what is on disk (WalSync); the sink's messages wait in the buffer.
    const failed = walSyncFailure(path);
    if (failed !== undefined) throw syncFailed(path, failed);
    this.#db = openSqlite(path, { synchronous: 'normal' });
    this.#walSync = synchronous === 'full' ? new WalSync(path, options) : undefined;
    this.#db.exec(schema);
    const insert = this.#db.prepare('INSERT OR IGNORE INTO history (id, bridge, topic, client_id, qos, payload, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)');
    // INSERT_ROWS rows per statement, where a commit has that many (connection.ts says why).
    const insertMany = this.#db.prepare(`INSERT OR IGNORE INTO history (id, bridge, topic, client_id, qos, payload, received_at) VALUES ${valuesList(INSERT_ROWS, 7)}`);
    const params = new Array<unknown>(INSERT_ROWS * 7);
    const counted = this.#db.prepare<[string], number>('SELECT rows FROM history_counts WHERE bridge = ?').pluck();
    // Once per bridge and writer: a history written before the counts were kept, or by a
    // version that did not keep them, is counted afresh.
    const count = this.#db.prepare<[string], number>('SELECT count(*) FROM history WHERE bridge = ?').pluck();
    const setCount = this.#db.prepare('INSERT INTO history_counts (bridge, rows) VALUES (?, ?) ON CONFLICT (bridge) DO UPDATE SET rows = excluded.rows');
    // Deletes the bridge's oldest rows, as many as the offset plus one: the index on (bridge,
    // seq) walks only those. (Finding the newest `keep` instead walked all of them, each batch.)
    const trim = this.#db.prepare('DELETE FROM history WHERE bridge = ? AND seq <= (SELECT seq FROM history WHERE bridge = ? ORDER BY seq LIMIT 1 OFFSET ?)');
    this.#append = this.#db.transaction((bridge: string, envelopes: readonly Envelope[], keep: number) => {
      let rows = (this.#counted.has(bridge) ? counted.get(bridge) : undefined) ?? (count.get(bridge) as number);
      let i = 0;
      for (; i + INSERT_ROWS <= envelopes.length; i += INSERT_ROWS) {
        for (let j = 0; j < INSERT_ROWS; j++) {
          const e = envelopes[i + j] as Envelope;
          const k = j * 7;
          params[k] = e.id;
          params[k + 1] = bridge;
          params[k + 2] = e.topic;
          params[k + 3] = e.origin.clientId ?? null;
          params[k + 4] = e.origin.qos ?? null;
          params[k + 5] = e.payload;
          params[k + 6] = e.timestamp;
        }
        rows += insertMany.run(params).changes;
      }
      params.fill(undefined);
      for (; i < envelopes.length; i++) {
        const e = envelopes[i] as Envelope;
        rows += insert.run(e.id, bridge, e.topic, e.origin.clientId ?? null, e.origin.qos ?? null, e.payload, e.timestamp).changes;
      }
      if (rows > keep) rows -= trim.run(bridge, bridge, rows - keep - 1).changes;
      setCount.run(bridge, rows);
    });
  }

  /** Appends in one transaction; resolves once it is on disk (under `full`) or committed. */
  async append(bridge: string, envelopes: readonly Envelope[], keep: number): Promise<void> {
    const walSync = this.#walSync;
    if (walSync?.failure !== undefined) throw syncFailed(this.#path, walSync.failure);
    this.#append(bridge, envelopes, keep);
    this.#counted.add(bridge);
    if (walSync === undefined) return;
    await new Promise<void>((resolve, reject) => walSync.after((error) => (error === undefined ? resolve() : reject(error))));
  }

  /** Closes the database; an append waiting for its sync is synced now. */
  close(): void {
    this.#walSync?.flushSync();
    this.#walSync?.close();
    this.#db.close();
  }
}

function syncFailed(path: string, error: Error): Error {
  return new Error(`the disk failed to sync ${path} (${error.message}): the history is not written again until the gateway restarts`, { cause: error });
}

export interface HistoryQuery {
  readonly bridge?: string;
  /** SQL LIKE pattern over the topic, built from an MQTT filter by the caller. */
  readonly topicPrefix?: string;
  readonly limit: number;
  /** Only rows with a larger seq (for following). */
  readonly afterSeq?: number;
}

/** Reads the history while a gateway writes to it (WAL readers do not block the writer). */
export class HistoryReader {
  readonly #db: Database.Database;

  constructor(dataDir: string) {
    this.#db = openSqlite(historyPath(dataDir), { readonly: true });
  }

  /** The newest `limit` rows matching, oldest first. */
  latest(query: HistoryQuery): HistoryRow[] {
    const where: string[] = ['seq > ?'];
    const params: unknown[] = [query.afterSeq ?? 0];
    if (query.bridge !== undefined) {
      where.push('bridge = ?');
      params.push(query.bridge);
    }
    if (query.topicPrefix !== undefined) {
      where.push("topic LIKE ? ESCAPE '\\'");
      params.push(`${query.topicPrefix.replace(/[\\%_]/g, (c) => `\\${c}`)}%`);
    }
    const rows = this.#db
      .prepare(
        `SELECT seq, id, bridge, topic, client_id AS clientId, qos, payload, received_at AS receivedAt
         FROM history WHERE ${where.join(' AND ')} ORDER BY seq DESC LIMIT ?`,
      )
      .all(...params, query.limit) as HistoryRow[];
    return rows.reverse();
  }

  close(): void {
    this.#db.close();
  }
}
