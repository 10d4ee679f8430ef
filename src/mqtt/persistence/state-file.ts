import type Database from 'better-sqlite3';
import { topicMatches } from '../../core/topic.ts';
import { candidateRange } from './retained-store.ts';
import { STATE_FILE_MIN_VERSION } from './schema.ts';

/** A saved session as `ferry sessions` shows it. */
export interface SessionSummary {
  readonly clientId: string;
  /** The username that owns it ('' anonymous), null when logins were off. */
  readonly owner: string | null;
  /** True while the broker has recorded its client as connected. */
  readonly connected: boolean;
  readonly disconnectedAt: number | null;
  /** When it expires if its client stays away (ms since the epoch); null for never. */
  readonly expiresAt: number | null;
  readonly subscriptions: number;
  readonly queuedMessages: number;
  readonly queuedBytes: number;
}

export interface SessionDetail extends SessionSummary {
  readonly subscriptionList: readonly { readonly topic: string; readonly qos: number }[];
  readonly hasWill: boolean;
}

export interface RetainedEntry {
  readonly topic: string;
  readonly payload: Buffer;
  readonly owner: string | null;
  readonly expiresAt: number | null;
}

/** What the broker state file tells about a client that holds nothing: no session. */
export class StateFileError extends Error {}

const SESSION_COLUMNS = `
  c.client_id AS clientId, s.owner, s.disconnected_at AS disconnectedAt, s.expiry_seconds AS expirySeconds, s.expires_at AS expiresAt, s.client_id IS NOT NULL AS recorded,
  (SELECT count(*) FROM subscriptions WHERE client_id = c.client_id) AS subscriptions,
  coalesce(q.messages, 0) AS queuedMessages, coalesce(q.bytes, 0) AS queuedBytes`;
const SESSION_SOURCE = `
  (SELECT client_id FROM sessions UNION SELECT client_id FROM subscriptions UNION SELECT DISTINCT client_id FROM queue) c
  LEFT JOIN sessions s USING (client_id)
  LEFT JOIN (SELECT client_id, count(*) AS messages, sum(bytes) AS bytes FROM queue GROUP BY client_id) q USING (client_id)`;

interface SessionRow {
  readonly clientId: string;
  readonly owner: string | null;
  readonly disconnectedAt: number | null;
  readonly expirySeconds: number | null;
  readonly expiresAt: number | null;
  readonly recorded: number;
  readonly subscriptions: number;
  readonly queuedMessages: number;
  readonly queuedBytes: number;
}

/**
 * The embedded broker's state file (broker.db) read and changed by `ferry sessions` and
 * `ferry retained` from another process, while the gateway runs or not. Reads are one
 * transaction each (a consistent snapshot). Changes are seen by a running broker: retained
 * messages are read from the file at each SUBSCRIBE, and the broker reads the subscriptions again
 * when another process changed the file (sqlite-persistence.ts). A session whose client is
 * connected is not purged: the broker holds that client's subscriptions in memory too.
 */
export class BrokerStateFile {
  readonly #db: Database.Database;

  constructor(db: Database.Database) {
    this.#db = db;
    const version = db.pragma('user_version', { simple: true }) as number;
    if (version < STATE_FILE_MIN_VERSION)
      throw new StateFileError(`${db.name} is from an older version of Ferry (schema ${version}): start \`ferry run\` once to bring it up to date`);
  }

  sessions(): SessionSummary[] {
    const rows = this.#db.prepare(`SELECT ${SESSION_COLUMNS} FROM ${SESSION_SOURCE} ORDER BY c.client_id`).all() as SessionRow[];
    return rows.map(summary);
  }

  /** The session of a client id; throws StateFileError when there is none. */
  session(clientId: string): SessionDetail {
    return this.#db.transaction(() => {
      const row = this.#db.prepare(`SELECT ${SESSION_COLUMNS} FROM ${SESSION_SOURCE} WHERE c.client_id = ?`).get(clientId) as SessionRow | undefined;
      if (row === undefined) throw new StateFileError(`no saved session of client '${clientId}'`);
      const subscriptionList = this.#db.prepare('SELECT topic, qos FROM subscriptions WHERE client_id = ? ORDER BY topic').all(clientId) as { topic: string; qos: number }[];
      const hasWill = this.#db.prepare('SELECT 1 FROM wills WHERE client_id = ?').get(clientId) !== undefined;
      return { ...summary(row), subscriptionList, hasWill };
    })();
  }

  /**
   * Removes a session (subscriptions, queued messages, QoS 2 state, will, record) in one
   * transaction; refused when its client is connected, unless `force` (for a file whose gateway
   * stopped without recording the disconnect, after a crash). Returns what it removed.
   */
  purgeSession(clientId: string, force: boolean): SessionSummary {
    return this.#db
      .transaction(() => {
        const found = this.session(clientId);
        if (found.connected && !force) {
          throw new StateFileError(
            `client '${clientId}' is connected: its session is in use (disconnect the client first; if the gateway is not running, it stopped without recording the disconnect: pass --force)`,
          );
        }
        for (const table of ['subscriptions', 'queue', 'incoming', 'wills', 'sessions']) this.#db.prepare(`DELETE FROM ${table} WHERE client_id = ?`).run(clientId);
        return found;
      })
      .immediate();
  }

  /** The retained messages whose topics match `filter` (all without one), in topic order, at most `limit`. */
  retained(filter: string | undefined, limit: number): RetainedEntry[] {
    const out: RetainedEntry[] = [];
    for (const row of this.#retainedRows(filter)) {
      out.push(row);
      if (out.length >= limit) break;
    }
    return out;
  }

  /** Deletes the retained messages matching `filter` (a topic deletes that one), in one transaction; returns their topics. */
  purgeRetained(filter: string): string[] {
    return this.#db
      .transaction(() => {
        const topics = [...this.#retainedRows(filter)].map((r) => r.topic);
        const remove = this.#db.prepare('DELETE FROM retained WHERE topic = ?');
        for (const topic of topics) remove.run(topic);
        return topics;
      })
      .immediate();
  }

  /** Retained message count and payload bytes of the whole gateway. */
  retainedTotals(): { messages: number; bytes: number } {
    return (this.#db.prepare('SELECT messages, bytes FROM retained_total').get() as { messages: number; bytes: number } | undefined) ?? { messages: 0, bytes: 0 };
  }

  *#retainedRows(filter: string | undefined): Generator<RetainedEntry> {
    const [from, below] = filter === undefined ? ['', Buffer.from([0xff])] : candidateRange(filter);
    const rows = this.#db
      .prepare('SELECT topic, payload, owner, expires_at AS expiresAt FROM retained WHERE topic >= ? AND topic < ? ORDER BY topic')
      .iterate(from, below) as IterableIterator<{
      topic: string;
      payload: Buffer | string | null;
      owner: string | null;
      expiresAt: number | null;
    }>;
    for (const row of rows) {
      if (filter !== undefined && !topicMatches(filter, row.topic)) continue;
      yield {
        topic: row.topic,
        payload: typeof row.payload === 'string' ? Buffer.from(row.payload) : (row.payload ?? Buffer.alloc(0)),
        owner: row.owner,
        expiresAt: row.expiresAt,
      };
    }
  }
}

function summary(row: SessionRow): SessionSummary {
  const connected = row.recorded === 1 && row.disconnectedAt === null;
  return {
    clientId: row.clientId,
    owner: row.owner,
    connected,
    disconnectedAt: row.disconnectedAt,
    expiresAt: row.expiresAt ?? (row.disconnectedAt === null || row.expirySeconds === null ? null : row.disconnectedAt + row.expirySeconds * 1000),
    subscriptions: row.subscriptions,
    queuedMessages: row.queuedMessages,
    queuedBytes: row.queuedBytes,
  };
}
