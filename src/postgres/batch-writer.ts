import type { Logger } from 'pino';
import type { Counters } from '../core/component.ts';
import type { Delivery } from '../core/delivery.ts';
import { FerryError } from '../core/errors.ts';
import { MessageFields, type Template, TemplateError } from '../core/template.ts';
import { ValueError } from './columns.ts';
import { describePgError, failureKind, sqlState, statementError } from './errors.ts';
import type { BatchTransaction } from './batch-transaction.ts';
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
  readonly counters: Counters;
  readonly logger: Logger;
}

export interface Row {
  readonly delivery: Delivery;
  readonly values: (string | null)[];
}

/** A batch as rows: the messages whose values fit their columns, and the others, refused alone (MESSAGE_INVALID). */
export interface RenderedBatch {
  readonly rows: Row[];
  readonly rejected: Map<Delivery, Error>;
  /**
   * Why some of those were refused by the type of a column as the plan has it (the table may
   * have changed since): `<column>: <ValueProblem>`, each once.
   */
  readonly misfits: ReadonlySet<string>;
}

/** Attempts of a statement that hit a serialization failure or a deadlock before the batch is failed (and retried by the buffer). */
const CONFLICT_ATTEMPTS = 3;

/**
 * A message refused alone (MESSAGE_INVALID, not retried: it goes to the dead letters), counted
 * by the writer once its batch is settled (a batch written again may refuse it no more).
 */
function refusal(options: BatchWriterOptions, delivery: Delivery, reason: string, cause?: unknown): FerryError {
  const { component, bridge, table } = options;
  const { id, topic } = delivery.envelope;
  return new FerryError('MESSAGE_INVALID', `${component}: message ${id} (MQTT topic '${topic}') cannot be written to ${table}: ${reason}`, {
    component,
    bridge,
    retryable: false,
    cause,
  });
}

/** A ValueError with its column: `misfit` is `<column>: <ValueProblem>`. */
class ColumnValueError extends Error {
  readonly misfit: string;

  constructor(message: string, misfit: string) {
    super(message);
    this.misfit = misfit;
  }
}

/** Renders each message's values and converts them to their columns' types. */
export function batchRenderer(options: BatchWriterOptions): (plan: InsertPlan, batch: readonly Delivery[]) => RenderedBatch {
  /** Throws a ColumnValueError for a value its column's type refuses, a TemplateError for a template without a value. */
  const render = (plan: InsertPlan, delivery: Delivery): (string | null)[] => {
    const fields = new MessageFields({ envelope: delivery.envelope, filters: options.sourceFilters });
    return plan.columns.map(({ info, convert }, i) => {
      const template = options.templates[i] as Template;
      try {
        return convert(template.single === undefined ? template.render(fields) : fields.raw(template.single));
      } catch (error) {
        if (error instanceof ValueError)
          throw new ColumnValueError(
            `column ${info.name} (${info.declaredType}) from '${template.source}': ${template.single === undefined ? 'the value' : 'its value'} ${error.message}`,
            `${info.name}: ${error.problem}`,
          );
        if (error instanceof TemplateError) throw new TemplateError(`column ${info.name}: ${error.message}`);
        throw error;
      }
    });
  };
  return (plan, batch) => {
    const rejected = new Map<Delivery, Error>();
    const rows: Row[] = [];
    const misfits = new Set<string>();
    for (const delivery of batch) {
      try {
        rows.push({ delivery, values: render(plan, delivery) });
      } catch (error) {
        if (!(error instanceof ColumnValueError || error instanceof TemplateError)) throw error;
        if (error instanceof ColumnValueError) misfits.add(error.misfit);
        rejected.set(delivery, refusal(options, delivery, error.message));
      }
    }
    return { rows, rejected, misfits };
  };
}

/**
 * When the conflict key is the message id, a row conflicts only when a message is delivered
 * again (after a crash, or a batch that failed), so a batch may first be inserted without
 * ON CONFLICT, which spares the server the speculative insertion that costs every row.
 */
export function conflictKeyIsId(plan: InsertPlan, templates: readonly Template[]): boolean {
  return plan.conflictIndexes.length === 1 && templates[plan.conflictIndexes[0] as number]?.single?.kind === 'id';
}

/** What writing one batch alone did: rows the server added, and rows it was asked to. */
export interface AloneOutcome {
  readonly inserted: number;
  readonly attempted: number;
  /** A unique violation sent a part through the statement with ON CONFLICT. */
  readonly conflicted: boolean;
  /**
   * Why rows were refused alone for a data error (`SQLSTATE 22003`, class 22): a value that does
   * not fit the plan's cast or the column, which the table may have changed since.
   */
  readonly misfits: ReadonlySet<string>;
}

/**
 * Writes one batch's rows in `transaction`, carefully: its insert first without ON CONFLICT
 * when `plain` (a unique violation, 23505, sends it through the statement with ON CONFLICT).
 * When the server refuses the statement for a data error (`failureKind` 'row'), the batch is
 * written again in halves, and those in halves, each after a savepoint, until the refused
 * rows are alone: each is added to `rejected` with its SQLSTATE and message, and the rest is
 * written. A refusal of class 42 (a `regclass` value naming no table) or P0 (a trigger's
 * `RAISE EXCEPTION`) is the rows' too, once the same insert with no rows runs: the table, the
 * privileges and the statement-level triggers are then fine. A serialization failure or
 * deadlock is tried again a few times. Any other failure is thrown as a retryable FerryError;
 * the caller rolls the transaction back.
 */
export async function writeAlone(options: BatchWriterOptions, transaction: BatchTransaction, plan: InsertPlan, batch: RenderedBatch, plain: boolean): Promise<AloneOutcome> {
  const { component, bridge, table, counters } = options;
  const context = { component, bridge };
  const { rejected } = batch;
  let inserted = 0;
  let attempted = 0;
  let split = false;
  let conflicted = false;
  const misfits = new Set<string>();
  /** Whether the insert runs with no rows (only asked after a refusal that rows or the table may have caused). */
  let fits = false;
  const fitsWithoutRows = async (text: string): Promise<boolean> => {
    if (fits) return true;
    try {
      await transaction.query(text, columnArrays(plan, []));
      fits = true;
    } catch (error) {
      options.logger.debug({ err: error }, `${component}: the insert into ${table} fails with no rows too`);
    }
    return fits;
  };
  const insert = async (part: readonly Row[], attempt = 1): Promise<void> => {
    const tried = plain;
    const text = tried ? plan.plainStatement : plan.statement;
    try {
      const result = await transaction.query(text, columnArrays(plan, part));
      inserted += result.rowCount ?? 0;
      attempted += part.length;
    } catch (error) {
      if (tried && sqlState(error) === '23505') {
        plain = false;
        conflicted = true;
        if (await transaction.recover()) return insert(part, attempt);
      }
      const kind = failureKind(error);
      const retried = kind === 'row' || kind === 'config' || (kind === 'conflict' && attempt < CONFLICT_ATTEMPTS);
      if (!retried || !(await transaction.recover())) throw statementError(`${component}: insert into ${table} failed`, error, context);
      if (kind === 'conflict') {
        await insert(part, attempt + 1);
        return;
      }
      const rowsOrTable = kind === 'config' || sqlState(error)?.startsWith('P0') === true;
      if (rowsOrTable && !(await fitsWithoutRows(text))) throw statementError(`${component}: insert into ${table} failed`, error, context);
      if (part.length === 1) {
        const only = part[0] as Row;
        const state = sqlState(error);
        if (state?.startsWith('22') === true) misfits.add(`SQLSTATE ${state}`);
        rejected.set(only.delivery, refusal(options, only.delivery, `PostgreSQL refused the row: ${describePgError(error)}`, error));
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

  // With `update`, one statement may not touch a row twice: of the messages with the same
  // conflict key, the last is written; if it is refused, the ones it replaced are written instead.
  let pending = batch.rows;
  while (pending.length > 0) {
    const { kept, replaced } = latestPerKey(options.onConflict, pending, plan.conflictIndexes);
    if (kept.length > 0) await insert(kept);
    pending = kept.filter((row) => rejected.has(row.delivery)).flatMap((row) => replaced.get(row) ?? []);
  }
  return { inserted, attempted, conflicted, misfits };
}

/** One `text[]` per column, the rows' values in order: the statement's parameters. */
export function columnArrays(plan: InsertPlan, part: readonly Row[]): Buffer[] {
  return plan.columns.map((_, c) => textArray(part.map((row) => row.values[c] as string | null)));
}

/**
 * With `update`, the last row of each conflict key, in their order, and for each the rows it
 * replaced (with `ignore`, every row, none replaced). Rows with a NULL in their key never
 * conflict (a unique index takes any number of them).
 */
export function latestPerKey(onConflict: 'ignore' | 'update', rows: readonly Row[], keyIndexes: readonly number[]): { kept: readonly Row[]; replaced: Map<Row, Row[]> } {
  const replaced = new Map<Row, Row[]>();
  if (onConflict === 'ignore') return { kept: rows, replaced };
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
