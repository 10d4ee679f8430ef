import type { Logger } from 'pino';
import type { Counters } from '../core/component.ts';
import { FerryError, asError } from '../core/errors.ts';
import { statementError } from './errors.ts';
import { firstReply } from './outbox-rows.ts';
import type { PgPool, PgQueryable } from './pools.ts';
import { type InsertPlan, MappingError, type TableMapping, checkInsert, planInsert } from './table.ts';

export interface InsertPlansOptions {
  /** "postgres sink of bridge 'x'", for messages. */
  readonly component: string;
  readonly bridge: string;
  /** The table as configured, for messages and the counter's label. */
  readonly table: string;
  /** The server, for messages (`127.0.0.1:5432/test`). */
  readonly server: string;
  readonly mapping: TableMapping;
  readonly pool: () => Promise<PgPool>;
  /** How long the first statement on a connection taken from the pool may wait for its reply (connectTimeoutMs, see firstReply). */
  readonly firstReplyMs: number;
  /** The table no longer fits the mapping (CONFIG_INVALID): the sink stops, leaving its messages buffered. */
  readonly stop: (error: FerryError) => void;
  readonly counters: Counters;
  readonly logger: Logger;
}

/**
 * After a re-read that found the columns as they were, refusals for the same reasons (the same
 * column and problem, or the same SQLSTATE) have them read again only this much later: a stream
 * of messages that are bad for good costs the catalog about one query a second, not one a row,
 * and leaves the refusals for other reasons free to have the columns read (a device that keeps
 * sending words for a number does not hide a number grown beyond int4). A re-read that found a
 * change leaves every reason free (a migration may change one column after another).
 */
export const QUIET_MS = 1000;

/**
 * The insert plans of one sink: the table's columns, read from the catalog when the sink starts
 * (`current`), and again when a row was refused for a reason a changed table could explain
 * (`newer`): a value that does not fit the type the sink knew (an `int4` widened to `int8`, a
 * column made `text`, a NOT NULL dropped), a data error (SQLSTATE class 22) the server raised
 * casting to that type, or an insert the table refuses (class 42: a column dropped, or changed
 * to a type the cast does not fit). Without the re-read such rows were dead-lettered, or their
 * batches retried, until a restart.
 */
export class InsertPlans {
  readonly #o: InsertPlansOptions;
  #current: Promise<InsertPlan> | undefined;
  /** The plan read last. */
  #latest: InsertPlan | undefined;
  /** Until when (performance.now()) a refusal for a reason does not have the columns read. */
  readonly #quiet = new Map<string, number>();

  constructor(options: InsertPlansOptions) {
    this.#o = options;
  }

  /** The plan to render batches with: read (and the insert checked) at the first call, and after `forget`. */
  current(): Promise<InsertPlan> {
    this.#current ??= (async () => {
      const { mapping } = this.#o;
      const plan = await this.#describe();
      this.#latest = plan;
      this.#o.logger.info({ table: this.#o.table, server: this.#o.server }, `${this.#o.component}: writing to ${this.#o.table} (${mapping.columns.join(', ')})`);
      return plan;
    })().catch((error: unknown) => {
      this.#current = undefined;
      throw this.#failure(error);
    });
    return this.#current;
  }

  /**
   * Reads the columns and checks the insert on one connection of the pool, whose first
   * statement gets `firstReplyMs`: an idle connection cut off from the server (a network cut
   * off tells neither end) would otherwise keep the sink's first batch waiting for pg's reply
   * timeout. Given up, it is discarded, and the next batch reads on another.
   */
  async #describe(): Promise<InsertPlan> {
    const { mapping, firstReplyMs } = this.#o;
    const client = await (await this.#o.pool()).connect();
    let first = true;
    const db: PgQueryable = {
      query: <R>(text: string, values?: unknown[]) => {
        const reply = client.query<R>(text, values);
        if (!first) return reply;
        first = false;
        return firstReply(reply, firstReplyMs, `the description of ${this.#o.table}`);
      },
    };
    let broken: Error | undefined;
    try {
      const plan = await planInsert(db, mapping);
      await checkInsert(db, plan, mapping);
      return plan;
    } catch (error) {
      broken = error instanceof MappingError ? error.broken : asError(error);
      throw error;
    } finally {
      client.release(broken);
    }
  }

  /** The table refused an insert as a whole: read it (and check the insert) again before the next batch. */
  forget(): void {
    this.#current = undefined;
  }

  /** The plan read last, when it converts or casts some column otherwise than `stale`. */
  known(stale: InsertPlan): InsertPlan | undefined {
    const latest = this.#latest;
    return latest === undefined || sameColumns(latest, stale) ? undefined : latest;
  }

  /** Whether `newer` would read the catalog now for refusals for `reasons`: for some, no re-read found the columns unchanged in the last QUIET_MS. */
  mayRead(reasons: Iterable<string>): boolean {
    const now = performance.now();
    for (const reason of reasons) if ((this.#quiet.get(reason) ?? 0) <= now) return true;
    return false;
  }

  /**
   * After rows rendered with `stale` were refused for `reasons` a changed table could explain:
   * the plan of the table as it is now when its columns differ from `stale`'s (the sink's plan
   * from then on), else undefined: the refusals stand. The catalog is read on `db` (the writer's
   * own connection when it holds one, so that a pool of one connection does not wait for
   * itself), unless a plan newer than `stale` was read already, or `mayRead(reasons)` is false.
   * Throws what the read threw: the server cannot be reached, or the table no longer fits the
   * mapping (the sink is then stopped). The writer calls it one call at a time.
   */
  async newer(stale: InsertPlan, db: PgQueryable, reasons: ReadonlySet<string>): Promise<InsertPlan | undefined> {
    const known = this.known(stale);
    if (known !== undefined || !this.mayRead(reasons)) return known;
    const fresh = await this.#reread(db, reasons);
    return sameColumns(fresh, stale) ? undefined : fresh;
  }

  async #reread(db: PgQueryable, reasons: ReadonlySet<string>): Promise<InsertPlan> {
    const { component, bridge, table, counters, logger } = this.#o;
    counters.count('postgres.columns.reloaded', { bridge, table });
    const quiet = () => {
      const until = performance.now() + QUIET_MS;
      for (const reason of reasons) this.#quiet.set(reason, until);
    };
    let fresh: InsertPlan;
    try {
      fresh = await planInsert(db, this.#o.mapping);
    } catch (error) {
      quiet();
      throw this.#failure(error);
    }
    const before = this.#latest;
    const changes = before === undefined ? [] : columnChanges(before, fresh);
    if (changes.length === 0) {
      quiet();
      logger.debug({ table, reasons: [...reasons] }, `${component}: read the columns of ${table} again after a refusal; they are as they were`);
      return before ?? fresh;
    }
    this.#quiet.clear();
    this.#latest = fresh;
    this.#current = Promise.resolve(fresh);
    logger.info({ table, changes }, `${component}: the columns of ${table} changed (${changes.join('; ')}); values are converted to the new types from now on`);
    return fresh;
  }

  /** What a failed read means: the mapping no longer fits (the sink is stopped, the batch fails retryably), or the statement's error. */
  #failure(error: unknown): FerryError {
    const { component, bridge } = this.#o;
    const context = { component, bridge };
    if (error instanceof MappingError) {
      // The configuration is wrong: stop, leaving the messages buffered. Stopping also drops the
      // batch waiting for this, unsettled, so none is nacked for it.
      const stopped = new FerryError('CONFIG_INVALID', `${component}: ${error.message}`, { ...context, retryable: false });
      this.#o.stop(stopped);
      return new FerryError('SINK_WRITE_FAILED', stopped.message, { ...context, retryable: true, cause: stopped });
    }
    return statementError(`${component}: cannot read table ${this.#o.table} on ${this.#o.server}`, error, context);
  }
}

/** Whether two plans convert and cast every column alike. */
export function sameColumns(a: InsertPlan, b: InsertPlan): boolean {
  return a === b || (a.statement === b.statement && columnChanges(a, b).length === 0);
}

/** `v: integer -> bigint`, `v: integer NOT NULL -> integer`, one per column that changed. */
function columnChanges(before: InsertPlan, after: InsertPlan): string[] {
  const shown = (info: InsertPlan['columns'][number]['info']) => `${info.declaredType}${info.notNull ? ' NOT NULL' : ''}`;
  return after.columns.flatMap(({ info }, i) => {
    const old = before.columns[i]?.info;
    if (old !== undefined && old.castType === info.castType && old.baseType === info.baseType && shown(old) === shown(info)) return [];
    return [`${info.name}: ${old === undefined ? 'new' : shown(old)} -> ${shown(info)}`];
  });
}
