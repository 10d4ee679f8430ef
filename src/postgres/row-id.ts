import { v5 } from 'uuid';

/** The namespace of outbox rows' ids (a UUIDv4 drawn once): only Ferry's ids are made in it. */
const OUTBOX_NAMESPACE = '4f0c2b8e-5d3a-4c71-9a8e-2f6d1b7c9e35';

/**
 * The id of an outbox row as a message: the same each time the row is read (after a crash or a
 * stop left it in the table), so that a device's copy or answer, the history's key or a
 * Postgres unique key tell it from a new message, as a Kafka record's id does (recordId).
 *
 * A name-based UUID (version 5, RFC 9562) of what makes the row itself:
 * - `system`: the cluster (`pg_control_system()`'s system identifier, which a physical replica
 *   promoted after a failover shares with its primary);
 * - `tableoid`: the table (another one when it is dropped and made again);
 * - `xmin`: the transaction that wrote the row: an id column started again (`TRUNCATE ...
 *   RESTART IDENTITY`) gives new rows other ids, and a row updated is a new message;
 * - `id`: the row among those its transaction wrote.
 * Locking the row (`FOR UPDATE`) leaves its xmin as it is.
 */
export function outboxRowId(system: string, tableoid: string, xmin: string, id: string): string {
  return v5(`${system}\n${tableoid}\n${xmin}\n${id}`, OUTBOX_NAMESPACE);
}
