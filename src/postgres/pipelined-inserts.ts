import type { BatchResult } from '../core/batching-sink.ts';
import type { Delivery } from '../core/delivery.ts';
import type { StagedBatch } from '../core/pipelined-sink.ts';
import { BatchTransaction, beginStatement, statementName } from './batch-transaction.ts';
import { type BatchWriterOptions, type RenderedBatch, type Row, batchRenderer, columnArrays, conflictKeyIsId, latestPerKey, writeAlone } from './batch-writer.ts';
import { isFerryError } from '../core/errors.ts';
import { connectionLost, sqlState, statementError } from './errors.ts';
import type { InsertPlans } from './insert-plans.ts';
import { PipelinedConnection } from './pipelined-connection.ts';
import type { PgPool, PgQueryable, PgResult } from './pools.ts';
import type { InsertPlan } from './table.ts';

/** One transaction of the pipeline: `BEGIN`, the inserts of its batches, then `COMMIT`. */
interface Group {
  readonly client: PipelinedConnection;
  readonly entries: Entry[];
  readonly replies: Promise<unknown>[];
  state: 'open' | 'committing' | 'committed' | 'failed' | 'rolled back';
  /** Set when its COMMIT is sent: true once every statement of it succeeded and it committed. */
  outcome?: Promise<boolean>;
  /** The first of its statements that failed. */
  failure?: Error | undefined;
}

interface Entry {
  readonly deliveries: readonly Delivery[];
  /** The plan it was rendered with, and what came of that (rendered again when the table changed: `#revise`). */
  plan: InsertPlan;
  batch: RenderedBatch;
  /** The rows its insert carries (with `update`, the last of each key). */
  kept: readonly Row[];
  /** Resolves once the entry is on the wire, or was not sent. */
  sent: Promise<void>;
  /** The transaction it was sent in. */
  group?: Group;
  /** Its insert: the reply, or what failed. */
  reply?: Promise<PgResult<unknown> | Error>;
  plain: boolean;
  /** Not (or no longer) in a pipelined transaction: written alone when its commit comes. */
  alone: boolean;
  /** Alone only because batches before it were (not sent yet): pipelined once they are written (`#resume`). */
  behind: boolean;
  /** Why values did not fit their columns' types, when the columns are to be read again before it is written. */
  revise: ReadonlySet<string> | undefined;
}

export interface PipelinedInsertsOptions extends BatchWriterOptions {
  /** Most batches in flight (the pipeline's own limit): a transaction is closed at half of it, so one fills while the one before commits. */
  readonly concurrency: number;
  /**
   * How late a reply may be, counted from when the server could run its statement (see
   * `PipelinedConnection`), before the connection is given up; a transaction of the sink idle
   * this long was left behind, and the server ends it (see `beginStatement`).
   */
  readonly replyTimeoutMs: number;
}

/**
 * Writes the batches of one sink through one pipelined connection, in order. A batch's insert
 * is written as soon as the batch is formed, without waiting for the replies to the statements
 * before it; the batches go in transactions (`BEGIN`, their inserts, `COMMIT`) closed at half
 * the sink's concurrency, or when the first of their batches is to be committed, and a
 * transaction's `COMMIT` is sent only when the one before it has committed, so that at most one
 * commits while the next fills (and grows past half while the one before is slow to commit).
 * The server runs the statements in the order they were sent, so rows land in arrival order,
 * and while it inserts and commits one transaction Ferry converts the next batches: the
 * server's work and Ferry's overlap, and no batch waits for a round trip. A reply is late
 * (and the connection given up) only counted from when the server could start its statement
 * (`PipelinedConnection`), not from when it was queued behind the others.
 *
 * A statement that fails aborts its transaction, and the ones sent after it are refused
 * (SQLSTATE 25P02) or rolled back, so nothing after a failure is written before it: every batch
 * of that transaction and after it is then written alone, in order, in a transaction of its
 * own, by `writeAlone` (which finds rows the server refuses and writes the rest). Batches formed
 * meanwhile wait for their turn, until those are written: then they are pipelined (`#resume`).
 * A batch is acked once the transaction that holds it committed.
 */
export class PipelinedInserts {
  readonly #pool: () => Promise<PgPool>;
  readonly #plans: InsertPlans;
  readonly #options: PipelinedInsertsOptions;
  readonly #render: ReturnType<typeof batchRenderer>;
  readonly #groupSize: number;
  /** Writes to the connection, one after another in the order they were asked for. */
  #wire: Promise<unknown> = Promise.resolve();
  /** The connection held while batches are in flight; its failure shows in the replies (the pool hears pg's 'error' event for it). */
  #client: PipelinedConnection | undefined;
  #open: Group | undefined;
  #committing: Group | undefined;
  /** Batches staged and not yet settled, in order. */
  readonly #pending = new Set<Entry>();
  /** Of those, how many are written alone: while any is, new batches are too, after them. */
  #alone = 0;
  /** Whether inserts go first without ON CONFLICT (see `conflictKeyIsId`); false while redeliveries keep conflicting. */
  #plain: boolean | undefined;

  constructor(pool: () => Promise<PgPool>, plans: InsertPlans, options: PipelinedInsertsOptions) {
    this.#pool = pool;
    this.#plans = plans;
    this.#options = options;
    this.#render = batchRenderer(options);
    this.#groupSize = Math.max(1, Math.floor(options.concurrency / 2));
  }

  /**
   * Converts the batch by `stale` (the sink's plan when the batch was formed) and sends its
   * insert; commit the batches in the order they were staged. When a value does not fit its
   * column's type and the table's columns were read again since, the batch is converted by them
   * instead. When they may have to be read (`InsertPlans.mayRead`: not within QUIET_MS of a
   * read for the same reasons that found them unchanged), the batch is written alone, which
   * reads them first, on the writer's connection, once the batches before it committed.
   */
  stage(stale: InsertPlan, deliveries: readonly Delivery[]): StagedBatch {
    let plan = stale;
    let batch = this.#render(plan, deliveries);
    let revise: ReadonlySet<string> | undefined;
    if (batch.misfits.size > 0) {
      const known = this.#plans.known(plan);
      if (known !== undefined) batch = this.#render((plan = known), deliveries);
      else if (this.#plans.mayRead(batch.misfits)) revise = batch.misfits;
    }
    if (batch.rows.length === 0 && revise === undefined) return { commit: async () => this.#result(batch), abort: async () => {} };
    this.#plain ??= conflictKeyIsId(plan, this.#options.templates);
    const behind = this.#alone > 0 && revise === undefined;
    const entry: Entry = {
      deliveries,
      plan,
      batch,
      kept: latestPerKey(this.#options.onConflict, batch.rows, plan.conflictIndexes).kept,
      sent: Promise.resolve(),
      plain: this.#plain,
      alone: behind || revise !== undefined,
      behind,
      revise,
    };
    this.#pending.add(entry);
    if (entry.alone) this.#alone += 1;
    else entry.sent = this.#onWire(() => this.#send(entry));
    return { commit: () => this.#commit(entry), abort: () => this.#abort(entry) };
  }

  /** Queues work that writes to the connection behind the writes asked for before it. */
  #onWire<T>(work: () => Promise<T> | T): Promise<T> {
    const done = this.#wire.then(work);
    this.#wire = done.catch(() => {});
    return done;
  }

  async #connection(): Promise<PipelinedConnection> {
    if (this.#client === undefined) {
      const connection: PipelinedConnection = new PipelinedConnection(await (await this.#pool()).connect(), this.#options.replyTimeoutMs, (error) => this.#drop(connection, error));
      this.#client = connection;
    }
    return this.#client;
  }

  /** A reply, or the error in its place; when the error says the connection is gone, it is dropped. */
  #settle<T>(client: PipelinedConnection, reply: Promise<T>): Promise<T | Error> {
    return reply.catch((error: unknown) => {
      const failure = error instanceof Error ? error : new Error(String(error));
      if (connectionLost(error)) this.#drop(client, failure);
      return failure;
    });
  }

  /** Gives the connection back to the pool; with an error, the pool discards it, and every batch not committed is written alone. */
  #drop(client: PipelinedConnection, error?: Error): void {
    if (this.#client !== client) return;
    this.#client = undefined;
    client.release(error);
    if (error !== undefined) this.#writeAloneFrom(undefined);
  }

  async #send(entry: Entry): Promise<void> {
    if (entry.alone) return; // a failure before it was sent
    let client: PipelinedConnection;
    try {
      client = await this.#connection();
    } catch {
      this.#writeAloneFrom(undefined); // its own commit connects again and reports the failure
      return;
    }
    let group = this.#open;
    if (group !== undefined && group.entries.length >= this.#groupSize && this.#committing === undefined) {
      this.#sendCommit(group);
      group = undefined;
    }
    if (group === undefined) {
      group = { client, entries: [], replies: [this.#settle(client, client.query(beginStatement(this.#options.replyTimeoutMs)))], state: 'open' };
      this.#open = group;
    }
    group.entries.push(entry);
    entry.group = group;
    const { plan } = entry;
    const text = entry.plain ? plan.plainStatement : plan.statement;
    entry.reply = this.#settle(client, client.query({ name: statementName(text), text, values: columnArrays(plan, entry.kept) }));
    group.replies.push(entry.reply);
  }

  /** Sends the group's COMMIT: only when the group before it committed (`#committing` is then undefined). */
  #sendCommit(group: Group): void {
    group.state = 'committing';
    if (this.#open === group) this.#open = undefined;
    this.#committing = group;
    const { client } = group;
    const reply = this.#settle(client, client.query('COMMIT'));
    group.outcome = (async () => {
      const replies = await Promise.all(group.replies);
      const commit = await reply;
      group.failure = [...replies, commit].find((r): r is Error => r instanceof Error);
      if (!(commit instanceof Error) && group.failure === undefined && commit.command === 'COMMIT') {
        group.state = 'committed';
        this.#committing = undefined;
        return true;
      }
      // Still `#committing` until `#failed`: the transaction sent after it must not commit first.
      group.state = 'failed';
      return false;
    })();
  }

  /** The first of a failed transaction's batches to see it: its batches and every one after them are written alone. */
  #failed(group: Group): void {
    if ((group.failure as { code?: unknown } | undefined)?.code === '23505') this.#plain = false; // messages delivered again
    this.#options.logger.debug(
      { err: group.failure, batches: group.entries.length },
      `${this.#options.component}: a transaction of pipelined batches failed; writing them and the batches after them one at a time`,
    );
    this.#writeAloneFrom(group);
    if (this.#committing === group) this.#committing = undefined;
  }

  /**
   * After a failure: every batch not committed (but those of a transaction committing, other
   * than `group`, whose own commit will tell) is written alone, and the transaction still open
   * is rolled back.
   */
  #writeAloneFrom(group: Group | undefined): void {
    for (const entry of this.#pending) {
      const state = entry.group?.state;
      if (entry.alone || state === 'committed' || (state === 'committing' && entry.group !== group)) continue;
      entry.alone = true;
      this.#alone += 1;
    }
    const open = this.#open;
    if (open !== undefined) {
      open.state = 'rolled back';
      this.#open = undefined;
      if (open.client === this.#client) void this.#onWire(() => this.#settle(open.client, open.client.query('ROLLBACK')));
    }
  }

  async #commit(entry: Entry): Promise<BatchResult> {
    let result: BatchResult | undefined;
    try {
      return (result = await this.#write(entry));
    } finally {
      this.#settled(entry);
      if (result !== undefined) this.#resume();
    }
  }

  async #write(entry: Entry): Promise<BatchResult> {
    await entry.sent;
    if (!entry.alone) {
      const group = entry.group as Group;
      if (group.state === 'open') await this.#onWire(() => group.state === 'open' && this.#sendCommit(group));
      if (await group.outcome) {
        const result = (await entry.reply) as PgResult<unknown>;
        if (!entry.plain) this.#noteConflicts(entry, result.rowCount ?? 0);
        return this.#result(entry.batch);
      }
      if (!entry.alone) this.#failed(group);
    }
    return await this.#onWire(() => this.#writeAlone(entry));
  }

  /**
   * A batch committed: the next in line, alone only for waiting behind it (`behind`), are
   * pipelined (else, under a steady load, pipelining came back only once the sink ran dry). The
   * batches before them are settled, and none began its commit (the sink commits in order).
   */
  #resume(): void {
    for (const entry of this.#pending) {
      if (!entry.behind) return;
      entry.behind = false;
      entry.alone = false;
      this.#alone -= 1;
      entry.plain = this.#plain ?? entry.plain;
      entry.sent = this.#onWire(() => this.#send(entry));
    }
  }

  /** A settled batch: the messages it refused go to the dead letters, counted. */
  #result(batch: RenderedBatch): BatchResult {
    if (batch.rejected.size > 0) this.#options.counters.count('postgres.messages.rejected', { bridge: this.#options.bridge }, batch.rejected.size);
    return { rejected: batch.rejected };
  }

  #noteConflicts(entry: Entry, inserted: number): void {
    this.#countSkipped(entry.kept.length, inserted);
    if (inserted === entry.kept.length) this.#plain = conflictKeyIsId(entry.plan, this.#options.templates);
  }

  /** Rows an insert with `ON CONFLICT DO NOTHING` did not add: already there. */
  #countSkipped(attempted: number, inserted: number): void {
    if (this.#options.onConflict === 'ignore' && attempted > inserted)
      this.#options.counters.count('postgres.rows.skipped', { bridge: this.#options.bridge }, attempted - inserted);
  }

  /**
   * One batch in a transaction of its own, the connection to itself. When its values did not
   * fit, the server refused rows for a data error, or the table refused the insert, and the
   * table's columns turn out to have changed, it is converted by the new types and written again
   * (a transaction begun is rolled back first), once.
   */
  async #writeAlone(entry: Entry): Promise<BatchResult> {
    const { component, table, bridge } = this.#options;
    let revised = entry.revise !== undefined && (await this.#revise(entry, entry.revise));
    if (entry.batch.rows.length === 0) return this.#result(entry.batch);
    for (;;) {
      const transaction = await this.#begin();
      try {
        const outcome = await writeAlone(this.#options, transaction, entry.plan, entry.batch, this.#plain ?? false);
        if (outcome.conflicted) this.#plain = false;
        // The columns are read inside the transaction (usable: the refused rows' savepoints were rolled back).
        if (outcome.misfits.size > 0 && !revised && (revised = await this.#revise(entry, outcome.misfits))) {
          await transaction.rollback();
          continue;
        }
        await transaction.commit().catch((error: unknown) => {
          throw statementError(`${component}: commit of the insert into ${table} failed`, error, { component, bridge });
        });
        this.#countSkipped(outcome.attempted, outcome.inserted);
        return this.#result(entry.batch);
      } catch (error) {
        await transaction.rollback();
        if (!revised && isFerryError(error, 'CONFIG_INVALID') && (revised = await this.#revise(entry, new Set([`SQLSTATE ${sqlState(error.cause)}`])))) continue;
        throw error;
      }
    }
  }

  /** A transaction on the writer's connection, which stays the writer's: given back only when it failed. */
  async #begin(): Promise<BatchTransaction> {
    try {
      return await BatchTransaction.begin(async () => {
        const client = await this.#connection();
        return {
          query: client.query.bind(client),
          release: (error?: Error | boolean) => {
            if (error instanceof Error) this.#drop(client, error);
          },
        };
      }, this.#options.replyTimeoutMs);
    } catch (error) {
      const { component, table, bridge } = this.#options;
      throw statementError(`${component}: cannot begin the insert into ${table}`, error, { component, bridge });
    }
  }

  /** Renders the entry again when the table's columns changed since its plan was read (`InsertPlans.newer`); false when they did not. */
  async #revise(entry: Entry, reasons: ReadonlySet<string>): Promise<boolean> {
    entry.revise = undefined;
    // On the writer's connection, between statements of its own: the pool may have no other.
    const db: PgQueryable = this.#client ?? (await this.#pool());
    const plan = await this.#plans.newer(entry.plan, db, reasons);
    if (plan === undefined) return false;
    entry.plan = plan;
    entry.batch = this.#render(plan, entry.deliveries);
    entry.kept = latestPerKey(this.#options.onConflict, entry.batch.rows, plan.conflictIndexes).kept;
    return true;
  }

  /**
   * A batch after one that failed. Only a batch written alone fails (a failed transaction's
   * batches are written alone first), and every batch after it is written alone too: nothing
   * of this one is on the wire.
   */
  async #abort(entry: Entry): Promise<void> {
    this.#settled(entry);
  }

  /** The sink stopped: a connection still held is closed (a transaction still open rolls back with it). */
  close(): void {
    const client = this.#client;
    if (client !== undefined) this.#drop(client, new Error('the sink stopped'));
  }

  #settled(entry: Entry): void {
    if (!this.#pending.delete(entry)) return;
    if (entry.alone) this.#alone -= 1;
    if (this.#pending.size > 0) return;
    // Idle: the connection goes back to the pool.
    void this.#onWire(() => {
      const client = this.#client;
      if (client !== undefined && this.#pending.size === 0 && this.#open === undefined && this.#committing === undefined) this.#drop(client);
    });
  }
}
