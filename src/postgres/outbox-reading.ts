import type { Subscriber } from 'rxjs';
import { backoffDelay } from '../core/backoff.ts';
import type { ComponentContext } from '../core/component.ts';
import type { Delivery } from '../core/delivery.ts';
import { type PoolSettings, replyTimeoutMs } from './connection.ts';
import { beginStatement } from './batch-transaction.ts';
import { describePgError } from './errors.ts';
import { describeTable, quoteIdentifier, quoteTable, type TableName } from './identifiers.ts';
import { OutboxBatch } from './outbox-batch.ts';
import { OutboxListener } from './outbox-listener.ts';
import { type OutboxClient, type OutboxTable, binaryPayload, firstReply, rawTypes, readOutboxTable, rowEnvelope } from './outbox-rows.ts';
import type { PgPool, PoolLease, PostgresPools } from './pools.ts';
import type { PostgresSourceConfig } from './outbox-source.ts';
import { steadyNow } from '../core/steady-clock.ts';

const MAX_BACKOFF_MS = 60_000;

export interface OutboxReadingOptions {
  readonly config: PostgresSourceConfig;
  readonly table: TableName;
  readonly component: string;
  readonly ctx: ComponentContext;
  readonly settings: PoolSettings;
  readonly pools: PostgresPools;
  readonly subscriber: Subscriber<Delivery>;
}

/**
 * One subscription's reading of the outbox (see postgresSource). Up to `maxBatches` read
 * transactions are open at once; each locks its rows (`FOR UPDATE SKIP LOCKED`, so the next
 * read and other gateways skip them), emits them in id order, deletes or marks the acked
 * ones when all are settled, and commits. A nack pauses reading until every open batch
 * committed and `retryBackoffMs` passed, so that refused rows come again in their order; a
 * row refused for good is tried once more by itself, then settled (see OutboxBatch).
 */
export class OutboxReading {
  readonly #o: OutboxReadingOptions;
  readonly #lease: PoolLease;
  /** The SELECT of a read, less its xmin and tableoid (a view or a foreign table has none). */
  readonly #columns: string;
  readonly #from: string;
  /** Found at the first read. */
  #table: { readonly outbox: OutboxTable; readonly settle: string } | undefined;
  readonly #batches = new Set<OutboxBatch>();
  /** Batches trying a row refused for good again by itself: no new read meanwhile, so that nothing joins it. */
  readonly #retryingAlone = new Set<OutboxBatch>();
  readonly #timers = new Set<NodeJS.Timeout>();
  readonly #listener: OutboxListener;
  #stopping = false;
  /** A read is running (one at a time: each starts after the one before locked its rows). */
  #reading = false;
  /** Something may be waiting in the outbox: read when a batch slot is free. */
  #wanted = true;
  /** After a nack or a failure: no read before this time, and none while batches are open. */
  #pausedUntil = 0;
  #failures = 0;
  #nackRounds = 0;

  constructor(options: OutboxReadingOptions) {
    this.#o = options;
    const { config, table } = options;
    this.#lease = options.pools.acquire(options.settings, (error) => {
      options.ctx.counters.count('postgres.pool.errors', { bridge: options.ctx.bridge });
      options.ctx.logger.warn({ err: error }, `${options.component}: an idle connection to ${options.settings.description} failed`);
    });
    this.#listener = new OutboxListener({
      lease: this.#lease,
      channel: config.channel ?? table.name,
      heartbeatMs: config.listenHeartbeatMs,
      listenTimeoutMs: config.connectTimeoutMs,
      retryBackoffMs: config.retryBackoffMs,
      component: options.component,
      ctx: options.ctx,
      onWake: () => {
        this.#wanted = true;
        this.#pump();
      },
    });
    const q = quoteIdentifier;
    const columns = [config.idColumn, config.payloadColumn, config.topicColumn, config.keyColumn, config.headersColumn].map((c) => (c === undefined ? 'NULL' : q(c)));
    const unmarked = config.delivered === 'mark' ? ` WHERE ${q(config.markColumn as string)} IS NULL` : '';
    this.#columns = `SELECT ${columns.join(', ')}`;
    this.#from = ` FROM ${quoteTable(table)}${unmarked} ORDER BY ${q(config.idColumn)} LIMIT ${config.batchSize} FOR UPDATE SKIP LOCKED`;
  }

  /**
   * Deletes or marks the rows of the ids given (as the server's text, in a text[]). They are
   * compared to the column as its own type, so that its index (the primary key) finds them:
   * `id::text = ANY(...)` would read the whole table at each commit.
   */
  #settleStatement(idType: string | undefined): string {
    const { config, table } = this.#o;
    const q = quoteIdentifier;
    const where = idType === undefined ? `${q(config.idColumn)}::text = ANY($1::text[])` : `${q(config.idColumn)} = ANY($1::${idType}[])`;
    return config.delivered === 'mark'
      ? `UPDATE ${quoteTable(table)} SET ${q(config.markColumn as string)} = now() WHERE ${where}`
      : `DELETE FROM ${quoteTable(table)} WHERE ${where}`;
  }

  start(): void {
    this.#listener.start();
    this.#poll();
    this.#pump();
  }

  /** Unsubscribed: no more reads; open batches wait up to stopTimeoutMs for their rows, then commit what was acked. */
  async stop(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    this.#listener.stop();
    const open = [...this.#batches];
    await Promise.all(open.map((batch) => this.#finishWithin(batch, this.#o.config.stopTimeoutMs)));
    while (this.#reading) await new Promise((resolve) => setTimeout(resolve, 10));
    const unsettled = open.reduce((n, b) => n + b.unsettled, 0);
    if (unsettled > 0) this.#o.ctx.logger.info({ unsettled }, `${this.#o.component}: stopped with rows in flight; they stay in the outbox and are read again`);
    await this.#lease.release();
  }

  /** Reads while there is room and reason to. */
  #pump(): void {
    if (this.#stopping || this.#reading || !this.#wanted || this.#retryingAlone.size > 0) return;
    if (this.#batches.size >= this.#o.config.maxBatches) return;
    const wait = this.#pausedUntil - steadyNow();
    if (wait > 0 || (this.#pausedUntil > 0 && this.#batches.size > 0)) {
      if (wait > 0) this.#later(wait, () => this.#pump());
      return;
    }
    this.#pausedUntil = 0;
    this.#wanted = false;
    this.#reading = true;
    this.#read()
      .then((full) => {
        this.#failures = 0;
        // A full batch: there may be more right behind it.
        if (full) this.#wanted = true;
      })
      .catch((error: unknown) => {
        this.#failures += 1;
        this.#wanted = true;
        const delay = backoffDelay({ initialMs: this.#o.config.retryBackoffMs, maxMs: MAX_BACKOFF_MS, jitter: 0.2 }, this.#failures);
        this.#pausedUntil = steadyNow() + delay;
        this.#o.ctx.counters.count('postgres.outbox.errors', { bridge: this.#o.ctx.bridge });
        this.#o.ctx.logger.warn(
          { err: error, retryInMs: delay },
          `${this.#o.component}: cannot read ${describeTable(this.#o.table)} on ${this.#o.settings.description}: ${describePgError(error)}; retrying`,
        );
      })
      .finally(() => {
        this.#reading = false;
        this.#pump();
      });
  }

  /** One read transaction: locks and emits up to batchSize rows. True when the batch was full. */
  async #read(): Promise<boolean> {
    const pool: PgPool = await this.#lease.pool;
    const client = (await pool.connect()) as OutboxClient;
    // A checked-out connection that fails (the server went away) emits 'error' on itself; the
    // statement in progress, or the batch's commit, fails too and says so. Without a listener
    // the process would crash.
    const onError = (error: Error) => this.#o.ctx.logger.debug({ err: error }, `${this.#o.component}: a connection failed`);
    client.on('error', onError);
    const release = (error?: Error | boolean) => {
      client.off('error', onError);
      client.release(error);
    };
    let rows: (string | null)[][];
    let fields: { dataTypeID: number }[];
    let table: { readonly outbox: OutboxTable; readonly settle: string };
    try {
      table = this.#table ??= await this.#readTable(client);
      const select = `${this.#columns}${table.outbox.rowIds === null ? '' : ', xmin, tableoid'}${this.#from}`;
      await firstReply(client.query(beginStatement(this.#abandonedAfterMs())), this.#o.config.connectTimeoutMs, 'BEGIN');
      ({ rows, fields } = await client.query({ text: select, rowMode: 'array', types: rawTypes }));
    } catch (error) {
      release(error instanceof Error ? error : true);
      throw error;
    }
    if (rows.length === 0 || this.#stopping) {
      await client.query('ROLLBACK').then(
        () => release(),
        (error: unknown) => release(error instanceof Error ? error : true),
      );
      return false;
    }
    const binary = binaryPayload(fields);
    const batch = new OutboxBatch(client, release, {
      component: this.#o.component,
      ctx: this.#o.ctx,
      subscriber: this.#o.subscriber,
      retryBackoffMs: this.#o.config.retryBackoffMs,
      later: (ms, run) => this.#later(ms, run),
      onRefusedWithOthers: () => this.#retryingAlone.add(batch),
    });
    batch.onSettled = () => void this.#finish(batch);
    batch.keepAlive(this.#abandonedAfterMs() / 3);
    this.#batches.add(batch);
    batch.deliver(rows.map((row) => ({ id: row[0] as string, envelope: rowEnvelope(row, binary, table.outbox, this.#o.table) })));
    this.#o.ctx.counters.count('postgres.outbox.rows', { bridge: this.#o.ctx.bridge }, rows.length);
    return rows.length === this.#o.config.batchSize;
  }

  /**
   * How long the server lets a read transaction wait for its next statement (see
   * OutboxBatch.keepAlive): as long as pg waits for a reply before it gives a connection up.
   */
  #abandonedAfterMs(): number {
    return replyTimeoutMs(this.#o.config);
  }

  async #readTable(client: OutboxClient): Promise<{ readonly outbox: OutboxTable; readonly settle: string }> {
    const { config, table, component, ctx, settings } = this.#o;
    const outbox = await readOutboxTable(client, table, config.idColumn, component, ctx.logger, settings.description);
    return { outbox, settle: this.#settleStatement(outbox.idType) };
  }

  /** Every row settled: delete or mark the acked ones (and those refused for good) and commit, then read on. */
  #finish(batch: OutboxBatch): Promise<void> {
    const done = (async () => {
      try {
        await batch.quiet();
        if (batch.settled.length > 0) await batch.client.query((this.#table as { settle: string }).settle, [batch.settled]);
        await batch.client.query('COMMIT');
        batch.release();
      } catch (error) {
        batch.release(error instanceof Error ? error : true);
        this.#o.ctx.counters.count('postgres.outbox.errors', { bridge: this.#o.ctx.bridge });
        this.#o.ctx.logger.warn(
          { err: error, rows: batch.size },
          `${this.#o.component}: cannot commit a batch of ${describeTable(this.#o.table)}: ${describePgError(error)}; its rows stay and are delivered again`,
        );
      }
    })().finally(() => {
      this.#batches.delete(batch);
      this.#retryingAlone.delete(batch);
      if (batch.nacked > 0) {
        this.#nackRounds += 1;
        const delay = backoffDelay({ initialMs: this.#o.config.retryBackoffMs, maxMs: MAX_BACKOFF_MS }, this.#nackRounds);
        this.#pausedUntil = Math.max(this.#pausedUntil, steadyNow() + delay);
      } else if (batch.settled.length > 0) {
        this.#nackRounds = 0;
      }
      // Rows the batch left (nacked) are read again; and rows skipped while it held its slot.
      this.#wanted = true;
      this.#pump();
    });
    return done;
  }

  /** On stop: the batch's rows get up to `ms` to settle, then it commits what was acked. */
  #finishWithin(batch: OutboxBatch, ms: number): Promise<void> {
    if (batch.done) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        batch.onSettled = () => {};
        resolve(this.#finish(batch));
      }, ms);
      batch.onSettled = () => {
        clearTimeout(timer);
        resolve(this.#finish(batch));
      };
      batch.stop();
    });
  }

  #pollTimer: NodeJS.Timeout | undefined;
  /** The fallback: a read every pollIntervalMs, whatever the notifications did. */
  #poll(): void {
    if (this.#pollTimer !== undefined || this.#stopping) return;
    this.#pollTimer = setTimeout(() => {
      this.#timers.delete(this.#pollTimer as NodeJS.Timeout);
      this.#pollTimer = undefined;
      this.#wanted = true;
      this.#pump();
      this.#poll();
    }, this.#o.config.pollIntervalMs);
    this.#timers.add(this.#pollTimer);
  }

  #later(ms: number, run: () => void): void {
    if (this.#stopping) return;
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      run();
    }, ms);
    this.#timers.add(timer);
  }
}
