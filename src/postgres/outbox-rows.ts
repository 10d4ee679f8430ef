import type { Logger } from 'pino';
import { createEnvelope, type Envelope } from '../core/envelope.ts';
import { describeTable, quoteTable, type TableName } from './identifiers.ts';
import type { PgPoolClient } from './pools.ts';
import { outboxRowId } from './row-id.ts';

/** The part of pg's pooled Client the outbox reads with: raw text values, and notifications. */
export interface OutboxClient extends PgPoolClient {
  query<R = Record<string, unknown>>(text: string, values?: unknown[]): Promise<{ rows: R[]; rowCount: number | null }>;
  query(config: { text: string; values?: unknown[]; rowMode: 'array'; types: RawTypes }): Promise<{ rows: (string | null)[][]; fields: { dataTypeID: number }[] }>;
  on(event: 'notification', listener: () => void): unknown;
  on(event: 'error', listener: (error: Error) => void): unknown;
  off(event: 'error', listener: (error: Error) => void): unknown;
  removeAllListeners(event: string): unknown;
}

/** Every column as the server's text: json stays the JSON text it was, bytea is decoded here. */
interface RawTypes {
  getTypeParser(oid: number, format?: string): (value: string) => string;
}
export const rawTypes: RawTypes = { getTypeParser: () => (value) => value };
const BYTEA = 17;

/** What the catalog says about the outbox, read once, at the first read. */
export interface OutboxTable {
  /**
   * Where the rows' message ids come from: the rows themselves (a table: the cluster's system
   * identifier, and each row's tableoid and xmin, see outboxRowId), or `null`, a new id at each
   * read (a view or a foreign table has no xmin).
   */
  readonly rowIds: { readonly system: string } | null;
  /**
   * The id column's type as declared (`bigint`, `uuid`, `character varying(20)`), or undefined
   * when the catalog does not say: the acked ids are compared to the column as that type, so
   * that its index finds them (the column cast to text would be read whole).
   */
  readonly idType: string | undefined;
}

export async function readOutboxTable(client: OutboxClient, table: TableName, idColumn: string, component: string, logger: Logger, server: string): Promise<OutboxTable> {
  const { rows } = await client.query<{ relkind: string; idType: string | null }>(
    `SELECT c.relkind, format_type(a.atttypid, a.atttypmod) AS "idType"
       FROM pg_catalog.pg_class c
       LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped
      WHERE c.oid = $1::regclass`,
    [quoteTable(table), idColumn],
  );
  const idType = rows[0]?.idType ?? undefined;
  const kind = rows[0]?.relkind;
  if (kind !== 'r' && kind !== 'p') {
    logger.info(`${component}: ${describeTable(table)} is not a table (no xmin): a row read again after a crash or a stop gets a new message id`);
    return { rowIds: null, idType };
  }
  // A server that does not let this user read it: the connection's description stands in
  // for the cluster (a failover to another host then gives rows read again new ids).
  const system = await client.query<{ system: string }>('SELECT system_identifier::text AS system FROM pg_control_system()').then(
    ({ rows }) => rows[0]?.system ?? server,
    () => server,
  );
  return { rowIds: { system }, idType };
}

/** A read row as a message; `row` is the SELECT's columns: id, payload, topic, key, headers, then xmin and tableoid when the table has them. */
export function rowEnvelope(row: readonly (string | null)[], binary: boolean, outbox: OutboxTable, table: TableName): Envelope {
  const [id, payload, topic, key, headers, xmin, tableoid] = row;
  const bytes = payload === null || payload === undefined ? new Uint8Array() : binary ? Buffer.from(payload.slice(2), 'hex') : payload;
  const { rowIds } = outbox;
  return createEnvelope({
    ...(rowIds && xmin && tableoid ? { id: outboxRowId(rowIds.system, tableoid, xmin, id as string) } : {}),
    topic: topic ?? describeTable(table),
    payload: bytes,
    origin: { source: 'postgres' },
    ...(key === null || key === undefined ? {} : { key }),
    ...(headers === null || headers === undefined ? {} : { headers: stringHeaders(headers) }),
  });
}

/** Whether the payload column (the SELECT's second) is bytea, whose text is hex to decode. */
export function binaryPayload(fields: readonly { dataTypeID: number }[]): boolean {
  return fields[1]?.dataTypeID === BYTEA;
}

/** A headers column's JSON object, its values as strings; anything else gives no headers. */
function stringHeaders(text: string): Record<string, string> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return {};
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return {};
  return Object.fromEntries(Object.entries(parsed).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]));
}

/**
 * The first statement on a connection taken from the pool, which may have been cut off while
 * idle (a network cut off tells neither end): it costs the server nothing, so it gets `ms`, as
 * long as opening a connection may take, rather than pg's reply timeout (statementTimeoutMs
 * plus connectTimeoutMs). Unanswered, it fails; the caller then discards the connection, which
 * destroys its socket (pg does, for a connection with a statement waiting).
 */
export async function firstReply<T>(statement: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no reply to ${what} within ${ms} ms (connectTimeoutMs); the connection is given up`)), ms);
  });
  // Settled by the discard, after the timeout won.
  statement.catch(() => {});
  try {
    return await Promise.race([statement, late]);
  } finally {
    clearTimeout(timer);
  }
}
