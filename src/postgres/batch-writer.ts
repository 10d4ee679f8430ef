import type { Logger } from 'pino';
import type { StagedBatch } from '../core/pipelined-sink.ts';
import type { Counters } from '../core/component.ts';
import type { Delivery } from '../core/delivery.ts';
import { FerryError } from '../core/errors.ts';
import { MessageFields, type Template, TemplateError } from '../core/template.ts';
import { ValueError } from './columns.ts';
import { describePgError, failureKind, sqlState, statementError } from './errors.ts';
import { BatchTransaction } from './batch-transaction.ts';
import type { PgPool } from './pools.ts';
import { textArray } from './text-array.ts';
import type { InsertPlan } from './table.ts';

/** What the writer of one sink knows besides the plan. */
export interface BatchWriterOptions {
  /** "postgres sink of bridge 'x'", for messages. */
  readonly component: string;
  readonly bridge: string;
  /** The table as configured, for messages. */
  readonly table: string;
  readonly onConflict: 'ignore' | 'update';
  /** Each configured column's template, in the plan's column order. */
  readonly templates: readonly Template[];
  readonly sourceFilters: readonly string[];
  /**
   * True when one batch is in flight at a time: its statements then commit by themselves
   * (one round trip less per batch, and the ack sooner) instead of in a transaction.
   */
  readonly autocommit: boolean;
  readonly counters: Counters;
  readonly logger: Logger;
}

interface Row {
  readonly delivery: Delivery;
  readonly values: (string | null)[];
}

/** Attempts of a statement that hit a serialization failure or a deadlock before the batch is failed (and retried by the buffer). */
const CONFLICT_ATTEMPTS = 3;

/**
 * Stages batches of messages as rows: each in a transaction of its own connection, one
 * statement per batch, committed when the pipeline says so. A message whose value does not
 * fit its column is refused alone before the statement (MESSAGE_INVALID). When the server
 * refuses the statement for a data error (class 22 or 23), the batch is written again in
 * halves, and those in halves, each after a savepoint, until the refused rows are alone: each
 * is refused with its SQLSTATE and message, and the rest is written. Any other failure rolls
 * the whole batch back. With `autocommit` (one batch in flight) each statement commits by
 * itself: rows written before a later failure stay, and when the messages are sent again
 * `ON CONFLICT` makes that add nothing.
 *
 * A batch is rendered at once, but its statements run only after those of the batch staged
 * before it (`turns`): a batch then waits only for locks that earlier batches hold (a later
 * batch with the same conflict key waits for the earlier one's commit), never the reverse,
 * which would be a deadlock the server cannot see (the earlier batch's commit waits in Ferry
 * for the later batch's insert). Rows keep their arrival order in the table (an identity
 * column numbers them in that order).
 */
export function batchWriter(options: BatchWriterOptions): (pool: PgPool, plan: InsertPlan, batch: readonly Delivery[], turns: Turns) => Promise<StagedBatch> {
  const { component, bridge, table, counters } = options;
  const context = { component, bridge };
  const reject = (delivery: Delivery, reason: string, cause?: unknown) => {
    counters.count('postgres.messages.rejected', { bridge });
    const { id, topic } = delivery.envelope;
    return new FerryError('MESSAGE_INVALID', `${component}: message ${id} (MQTT topic '${topic}') cannot be written to ${table}: ${reason}`, {
      ...context,
      retryable: false,
      cause,
    });
  };

  const render = (plan: InsertPlan, delivery: Delivery): (string | null)[] => {
    const fields = new MessageFields({ envelope: delivery.envelope, filters: options.sourceFilters });
    return plan.columns.map(({ info, convert }, i) => {
      const template = options.templates[i] as Template;
      try {
        return convert(template.single === undefined ? template.render(fields) : fields.raw(template.single));
      } catch (error) {
        if (error instanceof ValueError)
          throw new ValueError(
            `column ${info.name} (${info.declaredType}) from '${template.source}': ${template.single === undefined ? 'the value' : 'its value'} ${error.message}`,
          );
        if (error instanceof TemplateError) throw new ValueError(`column ${info.name}: ${error.message}`);
        throw error;
      }
    });
  };

  // When the conflict key is the message id, a row conflicts only when a message is delivered
  // again (after a crash, or a batch that failed), so each batch is first inserted without
  // ON CONFLICT, which spares the server the speculative insertion that costs every row; a
  // unique violation (23505) sends that part through the statement with ON CONFLICT.
  const idKey = (plan: InsertPlan) => plan.conflictIndexes.length === 1 && options.templates[plan.conflictIndexes[0] as number]?.single?.kind === 'id';

  return async (pool, plan, batch, turns) => {
    const rejected = new Map<Delivery, Error>();
    const rows: Row[] = [];
    for (const delivery of batch) {
      try {
        rows.push({ delivery, values: render(plan, delivery) });
      } catch (error) {
        if (!(error instanceof ValueError)) throw error;
        rejected.set(delivery, reject(delivery, error.message));
      }
    }
    if (rows.length === 0) return { commit: async () => ({ rejected }), abort: async () => {} };

    // The connection is taken and the transaction begun while the batch before is inserted;
    // they hold no lock.
    const begun = BatchTransaction.begin(() => pool.connect(), options.autocommit);
    begun.catch(() => {}); // awaited in the turn
    return turns(async () => {
      let transaction: BatchTransaction;
      try {
        transaction = await begun;
      } catch (error) {
        throw statementError(`${component}: cannot begin the insert into ${table}`, error, context);
      }
      let inserted = 0;
      let attempted = 0;
      let split = false;
      let plain = idKey(plan);
      const insert = async (part: readonly Row[], attempt = 1): Promise<void> => {
        const tried = plain;
        try {
          const result = await transaction.query(tried ? plan.plainStatement : plan.statement, columnArrays(plan, part));
          inserted += result.rowCount ?? 0;
          attempted += part.length;
        } catch (error) {
          if (tried && sqlState(error) === '23505') {
            plain = false;
            if (await transaction.recover()) return insert(part, attempt);
          }
          const kind = failureKind(error);
          const retried = kind === 'row' || (kind === 'conflict' && attempt < CONFLICT_ATTEMPTS);
          if (!retried || !(await transaction.recover())) throw statementError(`${component}: insert into ${table} failed`, error, context);
          if (kind === 'conflict') {
            await insert(part, attempt + 1);
            return;
          }
          if (part.length === 1) {
            const only = part[0] as Row;
            rejected.set(only.delivery, reject(only.delivery, `PostgreSQL refused the row: ${describePgError(error)}`, error));
            return;
          }
          if (!split) {
            split = true;
            counters.count('postgres.batches.split', { bridge });
            options.logger.debug(
              { err: error, rows: part.length },
              `${component}: the batch was refused for a data error (${describePgError(error)}); writing it in parts to find the rows at fault`,
            );
          }
          const half = Math.ceil(part.length / 2);
          await insert(part.slice(0, half));
          await insert(part.slice(half));
        }
      };

      try {
        // With `update`, one statement may not touch a row twice: of the messages with the same
        // conflict key, the last is written; if it is refused, the ones it replaced are written instead.
        let pending = rows;
        while (pending.length > 0) {
          const { kept, replaced } = options.onConflict === 'update' ? latestPerKey(pending, plan.conflictIndexes) : { kept: pending, replaced: new Map<Row, Row[]>() };
          if (kept.length > 0) await insert(kept);
          pending = kept.filter((row) => rejected.has(row.delivery)).flatMap((row) => replaced.get(row) ?? []);
        }
      } catch (error) {
        await transaction.rollback();
        throw error;
      }
      return {
        commit: async () => {
          try {
            await transaction.commit();
          } catch (error) {
            throw statementError(`${component}: commit of the insert into ${table} failed`, error, context);
          }
          if (options.onConflict === 'ignore' && attempted > inserted) counters.count('postgres.rows.skipped', { bridge }, attempted - inserted);
          return { rejected };
        },
        abort: () => transaction.rollback(),
      };
    });
  };
}

/** One `text[]` per column, the rows' values in order: the statement's parameters. */
function columnArrays(plan: InsertPlan, part: readonly Row[]): Buffer[] {
  return plan.columns.map((_, c) => textArray(part.map((row) => row.values[c] as string | null)));
}

/** Runs staged work one piece at a time, in the order it was handed in. */
export type Turns = <T>(work: () => Promise<T>) => Promise<T>;

export function turns(): Turns {
  let last: Promise<unknown> = Promise.resolve();
  return (work) => {
    const mine = last.then(work);
    last = mine.catch(() => {});
    return mine;
  };
}

/**
 * The last row of each conflict key, in their order, and for each the rows it replaced. Rows
 * with a NULL in their key never conflict (a unique index takes any number of them).
 */
function latestPerKey(rows: readonly Row[], keyIndexes: readonly number[]): { kept: Row[]; replaced: Map<Row, Row[]> } {
  const last = new Map<string, Row>();
  const keyOf = (row: Row) => {
    const values = keyIndexes.map((i) => row.values[i]);
    return values.includes(null) ? undefined : JSON.stringify(values);
  };
  for (const row of rows) {
    const key = keyOf(row);
    if (key !== undefined) last.set(key, row);
  }
  const kept: Row[] = [];
  const replaced = new Map<Row, Row[]>();
  for (const row of rows) {
    const key = keyOf(row);
    const latest = key === undefined ? row : (last.get(key) as Row);
    if (latest === row) {
      kept.push(row);
      continue;
    }
    const list = replaced.get(latest);
    if (list === undefined) replaced.set(latest, [row]);
    else list.push(row);
  }
  return { kept, replaced };
}
