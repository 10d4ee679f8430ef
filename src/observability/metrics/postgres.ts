import { BRIDGE, type MetricSpec } from './spec.ts';

/** The Postgres sink. */
export const postgresMetrics = [
  {
    name: 'postgres.messages.rejected',
    type: 'counter',
    unit: 'messages',
    labels: { bridge: BRIDGE },
    help: 'Messages the Postgres sink cannot write (a value that does not fit its column, a template field without a value, a row the server refused alone: a data error, SQLSTATE class 22 or 23, a value too large for its index, 54000, a trigger RAISE EXCEPTION, class P0, or a value naming no object, class 42), sent to the dead letters.',
  },
  {
    name: 'postgres.rows.skipped',
    type: 'counter',
    unit: 'rows',
    labels: { bridge: BRIDGE },
    help: 'Rows not inserted because a row with their conflict key was already there (`onConflict: ignore`): mostly messages delivered again after a crash or a failed batch.',
  },
  {
    name: 'postgres.batches.split',
    type: 'counter',
    unit: 'batches',
    labels: { bridge: BRIDGE },
    help: 'Batches the server refused for a data error, written again in parts to find the rows at fault.',
  },
  {
    name: 'postgres.columns.reloaded',
    type: 'counter',
    unit: 'reads',
    labels: { bridge: BRIDGE, table: { meaning: 'the table of the Postgres sink, as configured' } },
    help: "Times the Postgres sink read its table's columns again because a row was refused for a reason a changed table could explain (a value that does not fit the column's type as the sink knew it, a data error, SQLSTATE class 22, or the insert refused, class 42); for refusals of one kind (column and problem, or SQLSTATE), at most about once a second while they are found unchanged. When they changed, the batch is written by the new types.",
  },
  {
    name: 'postgres.pool.errors',
    type: 'counter',
    unit: 'errors',
    labels: { bridge: BRIDGE },
    help: 'Idle pool connections that failed (the server restarted, the network dropped); the pool opens new ones when needed.',
  },
  {
    name: 'postgres.outbox.rows',
    type: 'counter',
    unit: 'rows',
    labels: { bridge: BRIDGE },
    help: 'Rows the Postgres source read from its outbox and handed to its sinks (a row nacked or in flight at a stop is read and counted again).',
  },
  {
    name: 'postgres.outbox.refused',
    type: 'counter',
    unit: 'rows',
    labels: { bridge: BRIDGE },
    help: 'Rows of the Postgres source a sink refused for good (a key that makes no valid topic), again when delivered by themselves: deleted (or marked) undelivered, and logged as an error with the reason.',
  },
  {
    name: 'postgres.outbox.errors',
    type: 'counter',
    unit: 'errors',
    labels: { bridge: BRIDGE },
    help: 'Failed reads, commits and LISTENs of the Postgres source (server down, table missing): retried with backoff; rows not committed stay in the outbox.',
  },
] as const satisfies readonly MetricSpec[];
