import { asError } from '../core/errors.ts';
import { type ColumnInfo, type Converter, converterFor } from './columns.ts';
import { describePgError, failureKind, sqlState } from './errors.ts';
import { type TableName, describeTable, quoteIdentifier, quoteTable } from './identifiers.ts';
import type { PgQueryable } from './pools.ts';

/** How the rows of a batch are written: the statement, and each mapped column's converter. */
export interface InsertPlan {
  /** The configured columns, in the order of the statement's parameters. */
  readonly columns: readonly { readonly info: ColumnInfo; readonly convert: Converter }[];
  /** Indexes (into `columns`) of the conflict target. */
  readonly conflictIndexes: readonly number[];
  /**
   * `INSERT INTO t (a, b) SELECT CAST(v.c1 AS uuid), ... FROM unnest($1::text[], ...) AS v(c1, ...)
   * ON CONFLICT (...) DO NOTHING | DO UPDATE SET ...`: one statement per batch, with one
   * `text[]` parameter per column. Its text depends on the config and the catalog only.
   */
  readonly statement: string;
  /** The same insert without its ON CONFLICT clause (see the writer for when it is tried first). */
  readonly plainStatement: string;
}

export interface TableMapping {
  readonly table: TableName;
  /** Column names, in the order their values are given. */
  readonly columns: readonly string[];
  readonly conflictColumns: readonly string[];
  readonly onConflict: 'ignore' | 'update';
}

/** Why the mapping does not fit the database: the configuration must change (or the table). */
export class MappingError extends Error {
  override readonly name = 'MappingError';
  /** How the connection the refusal came on failed after it (its ROLLBACK): the caller discards it. */
  readonly broken: Error | undefined;

  constructor(message: string, broken?: Error) {
    super(message);
    this.broken = broken;
  }
}

const COLUMNS_QUERY = `SELECT a.attname AS name,
       format_type(a.atttypid, -1) AS "castType",
       format_type(a.atttypid, a.atttypmod) AS "declaredType",
       coalesce(b.typname, t.typname) AS "baseType",
       coalesce(b.typcategory, t.typcategory) AS category,
       a.attnotnull AS "notNull"
  FROM pg_catalog.pg_attribute a
  JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_catalog.pg_type b ON t.typtype = 'd' AND b.oid = t.typbasetype
 WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum`;

/** Reads the table's columns from the catalog and builds the insert; throws a MappingError when the mapping cannot fit. */
export async function planInsert(db: PgQueryable, mapping: TableMapping): Promise<InsertPlan> {
  const name = describeTable(mapping.table);
  const found = await db.query<{ oid: number | null }>('SELECT to_regclass($1)::oid AS oid', [quoteTable(mapping.table)]);
  const oid = found.rows[0]?.oid ?? null;
  if (oid === null) {
    const caseHint = /[A-Z]/.test(name) ? ' (names are matched exactly, as if quoted: `Readings` is not `readings`)' : '';
    throw new MappingError(`table ${name} does not exist${mapping.table.schema === undefined ? ' in the search path' : ''}${caseHint}`);
  }
  const { rows } = await db.query<ColumnInfo>(COLUMNS_QUERY, [oid]);
  const byName = new Map(rows.map((row) => [row.name, row]));
  const missing = mapping.columns.filter((column) => !byName.has(column));
  if (missing.length > 0) {
    const has = rows.map((row) => `${row.name} ${row.declaredType}`).join(', ');
    throw new MappingError(`table ${name} has no column ${missing.map((m) => `'${m}'`).join(', ')} (its columns: ${has})`);
  }
  const columns = mapping.columns.map((column) => {
    const info = byName.get(column) as ColumnInfo;
    return { info, convert: converterFor(info) };
  });
  return {
    columns,
    conflictIndexes: mapping.conflictColumns.map((c) => mapping.columns.indexOf(c)),
    ...insertStatements(
      mapping,
      columns.map((c) => c.info),
    ),
  };
}

function insertStatements(mapping: TableMapping, columns: readonly ColumnInfo[]): { statement: string; plainStatement: string } {
  const names = columns.map((c) => quoteIdentifier(c.name));
  const aliases = columns.map((_, i) => `c${i + 1}`);
  const casts = columns.map((c, i) => `CAST(v.${aliases[i]} AS ${c.castType})`);
  const params = columns.map((_, i) => `$${i + 1}::text[]`);
  const target = mapping.conflictColumns.map(quoteIdentifier).join(', ');
  const updated = columns.filter((c) => !mapping.conflictColumns.includes(c.name)).map((c) => `${quoteIdentifier(c.name)} = EXCLUDED.${quoteIdentifier(c.name)}`);
  const action = mapping.onConflict === 'update' && updated.length > 0 ? `DO UPDATE SET ${updated.join(', ')}` : 'DO NOTHING';
  const plainStatement = `INSERT INTO ${quoteTable(mapping.table)} (${names.join(', ')}) SELECT ${casts.join(', ')} FROM unnest(${params.join(', ')}) AS v(${aliases.join(', ')})`;
  return { statement: `${plainStatement} ON CONFLICT (${target}) ${action}`, plainStatement };
}

/**
 * Runs the insert with no rows in a transaction that is rolled back: the server checks
 * everything a real batch would need (privileges, the casts, a unique index for the conflict
 * target, generated columns) without writing anything. A refusal of class 42 is a MappingError
 * (the connection stays usable, unless its ROLLBACK failed: `broken`, the refusal stands);
 * anything else (the server is down) is thrown as it is, and the caller discards the connection.
 */
export async function checkInsert(db: PgQueryable, plan: InsertPlan, mapping: TableMapping): Promise<void> {
  await db.query('BEGIN');
  try {
    await db.query(
      plan.statement,
      plan.columns.map(() => []),
    );
  } catch (error) {
    if (failureKind(error) !== 'config') throw error;
    const refusal = `${describeTable(mapping.table)} refuses the insert: ${describePgError(error)}${hint(error, mapping)}`;
    try {
      await db.query('ROLLBACK');
    } catch (failure) {
      throw new MappingError(refusal, asError(failure));
    }
    throw new MappingError(refusal);
  }
  await db.query('ROLLBACK');
}

function hint(error: unknown, mapping: TableMapping): string {
  const table = describeTable(mapping.table);
  const columns = mapping.conflictColumns.join(', ');
  switch (sqlState(error)) {
    case '42P10':
      return `; the conflict columns need a unique index or constraint: CREATE UNIQUE INDEX ON ${table} (${columns}), or set conflictColumns`;
    case '42501':
      return `; grant it: GRANT INSERT${mapping.onConflict === 'update' ? ', UPDATE' : ''} ON ${table} TO <the user>`;
    default:
      return '';
  }
}
