import { createHash } from 'node:crypto';
import { asError } from '../core/errors.ts';
import { connectionLost } from './errors.ts';
import type { PgPoolClient, PgResult } from './pools.ts';

/** A statement pg prepares once per connection under `name` (a name always carries the same text). */
interface PgStatement {
  readonly name: string;
  readonly text: string;
  readonly values: unknown[];
}

/** pg's pooled Client, which also takes a named statement. */
interface PreparingClient extends PgPoolClient {
  query<R = Record<string, unknown>>(text: string, values?: unknown[]): Promise<PgResult<R>>;
  query<R = Record<string, unknown>>(statement: PgStatement): Promise<PgResult<R>>;
}

/** Prepared statement names by text: a sink runs the same one or two texts for every batch. */
const names = new Map<string, string>();

export function statementName(text: string): string {
  let name = names.get(text);
  if (name === undefined) {
    name = `ferry_${createHash('sha1').update(text).digest('hex').slice(0, 24)}`;
    names.set(text, name);
  }
  return name;
}

/**
 * The statement that begins a sink's transaction (and an outbox read's, which its heartbeat
 * keeps busy: OutboxBatch.keepAlive). `SET LOCAL idle_in_transaction_session_timeout`
 * has the server end the transaction (and its session) once it waits for its next statement
 * longer than `abandonedAfterMs`: a sink sends each statement of a transaction right after the
 * one before, so a transaction that idle was left behind by a connection the sink gave up on (a
 * network cut off: the client timed out, the server was never told). Without it the server
 * would keep it open, and the locks of the rows it inserted, until its TCP noticed (hours), and
 * the same rows written again on a new connection would wait for them all that time.
 */
export function beginStatement(abandonedAfterMs: number, more = ''): string {
  return `BEGIN;${more} SET LOCAL idle_in_transaction_session_timeout = ${Math.max(1, Math.round(abandonedAfterMs))}`;
}

/**
 * One batch's transaction on a connection of its own, open until `commit` or `rollback`.
 * Deferred constraints are checked at each statement (`SET CONSTRAINTS ALL IMMEDIATE`), as
 * they are in autocommit, so that a row a deferred constraint refuses is found by the
 * writer's split like any other, not at COMMIT for the whole batch.
 *
 * A statement that fails aborts the transaction; `recover` makes it usable again: the first
 * statement's failure restarts the transaction (nothing was written yet), and from then on
 * every statement runs after a savepoint it is rolled back to when it fails. The statement
 * that succeeded is kept either way. Savepoints cost only batches that had a failure.
 */
export class BatchTransaction {
  readonly #client: PreparingClient;
  /** `BEGIN` and the settings of the transaction (see `beginStatement`). */
  readonly #begin: string;
  #statements = 0;
  #guarded = false;
  #broken: Error | undefined;
  #open = true;

  private constructor(client: PgPoolClient, abandonedAfterMs: number) {
    this.#client = client as PreparingClient;
    this.#begin = beginStatement(abandonedAfterMs, ' SET CONSTRAINTS ALL IMMEDIATE;');
  }

  /** Takes a connection and begins; the connection is given back if that fails. */
  static async begin(connect: () => Promise<PgPoolClient>, abandonedAfterMs: number): Promise<BatchTransaction> {
    const transaction = new BatchTransaction(await connect(), abandonedAfterMs);
    try {
      await transaction.#run(transaction.#begin);
    } catch (error) {
      await transaction.rollback();
      throw error;
    }
    return transaction;
  }

  /**
   * Runs a statement as a prepared statement of the connection, named after its text: the
   * server parses and plans it once per connection instead of once per batch.
   */
  async query(text: string, values: unknown[]): Promise<PgResult<Record<string, unknown>>> {
    this.#statements += 1;
    if (this.#guarded) await this.#run('SAVEPOINT part');
    return this.#run({ name: statementName(text), text, values });
  }

  /** After a failed `query`: false when the transaction cannot go on (the failure was not its first statement's, outside a savepoint). */
  async recover(): Promise<boolean> {
    if (this.#guarded) {
      await this.#run('ROLLBACK TO SAVEPOINT part');
      return true;
    }
    if (this.#statements !== 1) return false;
    await this.#run(`ROLLBACK; ${this.#begin}`);
    this.#statements = 0;
    this.#guarded = true;
    return true;
  }

  /** Commits and gives the connection back (discarded if it failed). */
  async commit(): Promise<void> {
    try {
      await this.#run('COMMIT');
    } finally {
      this.#release();
    }
  }

  /** Rolls back and gives the connection back; never rejects. */
  async rollback(): Promise<void> {
    if (!this.#open) return;
    try {
      if (this.#broken === undefined) await this.#run('ROLLBACK');
    } catch {
      // #run noted it: the connection is discarded
    } finally {
      this.#release();
    }
  }

  async #run(statement: string | PgStatement): Promise<PgResult<Record<string, unknown>>> {
    try {
      return await (typeof statement === 'string' ? this.#client.query(statement) : this.#client.query(statement));
    } catch (error) {
      // A statement the server refused leaves the connection usable; a socket error does not.
      if (connectionLost(error)) this.#broken = asError(error);
      throw error;
    }
  }

  #release(): void {
    if (!this.#open) return;
    this.#open = false;
    this.#client.release(this.#broken);
  }
}
