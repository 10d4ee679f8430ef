import type Database from 'better-sqlite3';
import { packRuns } from '../buffer/packs.ts';
import type { Envelope, Origin } from '../core/envelope.ts';
import { NO_HEADERS, isUuidV7 } from '../core/envelope.ts';
import { carrySequence } from './connection.ts';
import { filterHead, topicMatches } from '../core/topic.ts';
import type { HistoryQuery, HistoryRow } from './history-store.ts';

/**
 * Earlier versions kept the history as a row a message in a table `history` (with a unique
 * index on the id and one on (bridge, seq)). This converts such a file into packs and reads one
 * that is not converted yet.
 */

/**
 * Takes the name of the earlier versions' table: an earlier Ferry opening this history fails on
 * it ("views may not be indexed" when it writes, "no such column" when it reads) instead of
 * starting an empty table beside the packs it cannot see.
 */
export const HISTORY_GUARD = `CREATE VIEW IF NOT EXISTS history AS
  SELECT 'the messages of this history are in the table history_packs: read it with the Ferry that wrote it, or a newer one' AS note`;

/** Rows of the earlier table moved per step (a transaction) of the conversion: about 0.2 s here. */
const STEP_ROWS = 20_000;

interface LegacyRow {
  seq: number;
  id: string;
  bridge: string;
  topic: string;
  client_id: string | null;
  qos: number | null;
  payload: Buffer;
  received_at: number;
}

/** True when the history still has the earlier versions' table of rows. */
export function hasLegacyHistory(db: Database.Database): boolean {
  return db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'history'").get() !== undefined;
}

/** Rows in the earlier versions' table. */
export function legacyHistoryRows(db: Database.Database): number {
  return db.prepare('SELECT count(*) FROM history').pluck().get() as number;
}

/**
 * One step of the conversion, in a transaction of its own: moves up to `rows` of the earlier
 * table's rows after the packs' highest seq into packs, keeping their seqs (runs of one bridge's
 * rows with consecutive seqs become a pack each), and drops the table once none is left.
 * Returns the rows moved: 0 when the history is converted. The earlier table keeps every row
 * until that last step, so a reader sees it whole meanwhile (`legacyLatest`) and a step cut
 * short by a crash is done again.
 */
export function convertStep(db: Database.Database, insert: Database.Statement, rows = STEP_ROWS): number {
  // IMMEDIATE: a second writer of the file waits rather than converts the same rows too.
  return db
    .transaction((): number => {
      if (!hasLegacyHistory(db)) return 0;
      carrySequence(db, 'history', 'history_packs');
      const after = db.prepare('SELECT coalesce(max(last), 0) FROM history_packs').pluck().get() as number;
      const chunk = db.prepare<[number, number], LegacyRow>('SELECT * FROM history WHERE seq > ? ORDER BY seq LIMIT ?').all(after, rows);
      if (chunk.length === 0) {
        db.exec('DROP TABLE history');
        return 0;
      }
      const keepId = db.prepare('INSERT OR IGNORE INTO history_ids (bridge, id) VALUES (?, ?)');
      packRuns(chunk, toEnvelope, (pack, run, { bridge, first, last }) => {
        // As the writer keeps them (history-store.ts): the range of the UUIDv7s, a row for each other id.
        let min = '';
        let max = '';
        for (const { id } of run) {
          if (!isUuidV7(id)) keepId.run(bridge, id);
          else {
            if (min === '' || id < min) min = id;
            if (id > max) max = id;
          }
        }
        insert.run(last, bridge, first, min, max, pack.meta(), pack.body());
      });
      return chunk.length;
    })
    .immediate();
}

/** The earlier table kept no source: the origin of a converted message has its client id and QoS only. */
function toEnvelope(row: LegacyRow): Envelope {
  const origin: { -readonly [K in keyof Origin]: Origin[K] } = { source: 'unknown' };
  if (row.client_id !== null) origin.clientId = row.client_id;
  if (row.qos !== null) origin.qos = row.qos as 0 | 1 | 2;
  return { id: row.id, topic: row.topic, payload: row.payload, headers: NO_HEADERS, timestamp: row.received_at, origin };
}

/** `HistoryReader.latest` over a history no gateway of this version has opened yet. */
export function legacyLatest(db: Database.Database, query: HistoryQuery): HistoryRow[] {
  const where: string[] = ['seq > ?'];
  const params: unknown[] = [query.afterSeq ?? 0];
  if (query.bridge !== undefined) {
    where.push('bridge = ?');
    params.push(query.bridge);
  }
  // GLOB is case-sensitive, as topics are; its wildcards in the prefix are escaped as classes.
  const glob = (prefix: string) => `${prefix.replace(/[*?[]/g, (c) => `[${c}]`)}*`;
  if (query.topicPrefix !== undefined) {
    where.push('topic GLOB ?');
    params.push(glob(query.topicPrefix));
  }
  const { topicFilter: filter } = query;
  if (filter !== undefined) {
    where.push('topic GLOB ?');
    params.push(glob(filterHead(filter)));
  }
  const select = db.prepare(
    `SELECT seq, id, bridge, topic, client_id AS clientId, qos, payload, received_at AS receivedAt
     FROM history WHERE ${where.join(' AND ')} ORDER BY seq ${query.oldest === true ? 'ASC' : 'DESC'}${filter === undefined ? ' LIMIT ?' : ''}`,
  );
  let rows: HistoryRow[];
  if (filter === undefined) rows = select.all(...params, query.limit) as HistoryRow[];
  else {
    // The filter is matched here, so the rows are counted here too.
    rows = [];
    for (const row of select.iterate(...params) as IterableIterator<HistoryRow>) {
      if (!topicMatches(filter, row.topic)) continue;
      rows.push(row);
      if (rows.length >= query.limit) break;
    }
  }
  return query.oldest === true ? rows : rows.reverse();
}
