import { type ErrorContext, FerryError, wrapError } from '../core/errors.ts';

/**
 * What a failed statement means for the messages it carried, from its SQLSTATE
 * (https://www.postgresql.org/docs/current/errcodes-appendix.html):
 *
 * - `unavailable`: no connection, or the server is shutting down or full (class 08, 53,
 *   57P01-57P03, and network errors without a SQLSTATE): retry later, for ever.
 * - `conflict`: serialization failure or deadlock (40001, 40P01): the same batch may simply
 *   be tried again now.
 * - `row`: the data itself is refused (class 22 data exception, class 23 constraint
 *   violation, 21000 a row affected twice by one statement, 54000 a value too large for an
 *   index entry, class P0 a trigger's `RAISE EXCEPTION`): some row of the batch is at fault,
 *   and written alone it is that row's fault, never retried.
 * - `config`: the statement does not fit the database (class 42: no such table or column,
 *   no privilege, no unique index for the conflict target): the configuration is wrong. A
 *   value can raise one too (a `regclass` naming no table): the writer tells the two apart by
 *   running the insert with no rows (see `writeAlone`).
 * - `other`: anything else (a cancelled statement, an internal error): retried, since
 *   nothing says the messages are at fault.
 */
export type FailureKind = 'unavailable' | 'conflict' | 'row' | 'config' | 'other';

/**
 * The SQLSTATE of an error the server sent (pg's DatabaseError, with its `severity`); socket
 * errors have Node's codes (`ECONNREFUSED`, `EPIPE`) instead, and pg's own timeouts none.
 */
export function sqlState(error: unknown): string | undefined {
  const { code, severity } = (error ?? {}) as { code?: unknown; severity?: unknown };
  return typeof code === 'string' && typeof severity === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/**
 * True when the connection that ran the statement is gone: a socket error (no SQLSTATE), or a
 * FATAL or PANIC error, after which the server closes the connection (57P01 when a backend
 * is ended or the server shuts down), though pg learns of the close only later.
 */
export function connectionLost(error: unknown): boolean {
  const { severity } = (error ?? {}) as { severity?: unknown };
  return typeof severity !== 'string' || severity === 'FATAL' || severity === 'PANIC';
}

export function failureKind(error: unknown): FailureKind {
  const state = sqlState(error);
  // Not from the server: a socket that failed or closed, a connect or query timeout.
  if (state === undefined) return 'unavailable';
  const cls = state.slice(0, 2);
  if (cls === '08' || cls === '53' || state === '57P01' || state === '57P02' || state === '57P03') return 'unavailable';
  if (state === '40001' || state === '40P01') return 'conflict';
  if (cls === '22' || cls === '23' || state === '21000' || state === '54000' || cls === 'P0') return 'row';
  if (cls === '42') return 'config';
  return 'other';
}

/** `SQLSTATE 23514: new row for relation "readings" violates check constraint "celsius_range" (detail)`. */
export function describePgError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const state = sqlState(error);
  const detail = (error as { detail?: unknown }).detail;
  const column = (error as { column?: unknown }).column;
  const message = error.message || (error as { code?: unknown }).code?.toString() || error.name;
  return [
    state === undefined ? message : `SQLSTATE ${state}: ${message}`,
    typeof column === 'string' && !message.includes(`"${column}"`) ? ` (column ${column})` : '',
    typeof detail === 'string' && detail !== '' ? `: ${detail}` : '',
  ].join('');
}

/**
 * A batch's failed statement as a FerryError: UPSTREAM_UNAVAILABLE when the server cannot be
 * reached, CONFIG_INVALID when the table no longer fits the mapping (class 42: it was changed
 * under a running sink, which reads it again before the next attempt and stops if the
 * mapping no longer fits), else SINK_WRITE_FAILED. Always retryable: the batch's messages are
 * not at fault (row faults are found by the writer, which splits the batch down to the row).
 */
export function statementError(what: string, error: unknown, context: ErrorContext): FerryError {
  const kind = failureKind(error);
  const code = kind === 'unavailable' ? 'UPSTREAM_UNAVAILABLE' : kind === 'config' ? 'CONFIG_INVALID' : 'SINK_WRITE_FAILED';
  return new FerryError(code, `${what}: ${describePgError(error)}`, { ...context, retryable: true, cause: error });
}

/** A config problem found at startup (or when the table changed under a running sink): it stops the sink. */
export function configError(message: string, context: ErrorContext, cause?: unknown): FerryError {
  return cause === undefined
    ? new FerryError('CONFIG_INVALID', message, { ...context, retryable: false })
    : wrapError('CONFIG_INVALID', message, cause, { ...context, retryable: false });
}
