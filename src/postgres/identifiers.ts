import { z } from 'zod';
/**
 * Table and column names: they come only from config, are checked against a strict pattern
 * when it is loaded, and are always written quoted. Nothing a message carries (topic, client
 * id, payload) ever becomes SQL text; it is always a parameter.
 */

/** Letters, digits and `_`, not starting with a digit, at most 63 bytes (PostgreSQL's NAMEDATALEN - 1). */
const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

export const IDENTIFIER_RULE = 'a name is 1 to 63 letters, digits or "_", not starting with a digit';

/** Why `name` cannot be a table or column name here, or undefined when it can. */
export function identifierProblem(name: string): string | undefined {
  if (IDENTIFIER.test(name)) return undefined;
  const bad = [...new Set(name.replace(/[A-Za-z0-9_]/g, ''))].map((c) => JSON.stringify(c)).join(' ');
  if (bad !== '') return `${IDENTIFIER_RULE}; it has ${bad}`;
  return IDENTIFIER_RULE;
}

/** A table name as configured: `readings` (found through the search path) or `schema.readings`. */
export interface TableName {
  readonly schema: string | undefined;
  readonly name: string;
}

/** Parses `schema.table` or `table`; undefined with a reason when it is not one. */
export function parseTableName(text: string): { table: TableName } | { problem: string } {
  const parts = text.split('.');
  if (parts.length > 2) return { problem: `'${text}' is not \`table\` or \`schema.table\`` };
  for (const part of parts) {
    const problem = identifierProblem(part);
    if (problem !== undefined) return { problem: `'${text}': ${problem}` };
  }
  return { table: parts.length === 2 ? { schema: parts[0], name: parts[1] as string } : { schema: undefined, name: parts[0] as string } };
}

/**
 * A checked identifier, double-quoted, so that it means exactly what was configured (case
 * included) and a reserved word (`user`, `order`) is a plain name. The pattern admits no `"`,
 * so there is nothing to escape; the check is repeated here so that no caller can skip it.
 */
export function quoteIdentifier(name: string): string {
  if (identifierProblem(name) !== undefined) throw new Error(`bug: unchecked identifier ${JSON.stringify(name)}`);
  return `"${name}"`;
}

export function quoteTable(table: TableName): string {
  return table.schema === undefined ? quoteIdentifier(table.name) : `${quoteIdentifier(table.schema)}.${quoteIdentifier(table.name)}`;
}

/** As configured, for messages: `public.readings`. */
export function describeTable(table: TableName): string {
  return table.schema === undefined ? table.name : `${table.schema}.${table.name}`;
}

/** A column or channel name in a component's config: letters, digits and `_` (see identifierProblem). */
export const identifierSchema = z.string().superRefine((name, ctx) => {
  const problem = identifierProblem(name);
  if (problem !== undefined) ctx.addIssue({ code: 'custom', message: `'${name}': ${problem}` });
});

/** A table name in a component's config: `table` or `schema.table` (see parseTableName). */
export const tableNameSchema = z.string().superRefine((text, ctx) => {
  const parsed = parseTableName(text);
  if ('problem' in parsed) ctx.addIssue({ code: 'custom', message: `table ${parsed.problem}` });
});
