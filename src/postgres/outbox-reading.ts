import type { Subscriber } from 'rxjs';
import { backoffDelay } from '../core/backoff.ts';
import type { ComponentContext } from '../core/component.ts';
import { createDelivery, type Delivery } from '../core/delivery.ts';
import { createEnvelope, type Envelope } from '../core/envelope.ts';
import type { PoolSettings } from './connection.ts';
import { describePgError } from './errors.ts';
import { describeTable, quoteIdentifier, quoteTable, type TableName } from './identifiers.ts';
import type { PgPool, PgPoolClient, PoolLease, PostgresPools } from './pools.ts';
import type { PostgresSourceConfig } from './outbox-source.ts';
import { outboxRowId } from './row-id.ts';

/** The part of pg's pooled Client the outbox reads with: raw text values, and notifications. */
interface OutboxClient extends PgPoolClient {
  query<R = Record<string, unknown>>(text: string, values?: unknown[]): Promise<{ rows: R[]; rowCount: number | null }>;
  query(config: { text: string; values?: unknown[]; rowMode: 'array'; types: RawTypes }): Promise<{ rows: (string | null)[][]; fields: { dataTypeID: number }[] }>;
  on(event: 'notification', listener: () => void): unknown;
  on(event: 'error', listener: (error: Error) => void): unknown;
  off(event: 'error', listener: (error: Error) => void): unknown;
  removeAllListeners(event: string): unknown;
}

/** Every column as the server's text: json stays the JSON text it was, bytea is decoded here. */
interface RawTypes {
  getTypeParser(oid: number, format?: string): (value: string) => string;
}
const rawTypes: RawTypes = { getTypeParser: () => (value) => value };
const BYTEA = 17;

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

/** One read transaction: its rows, locked until it commits, and how each was settled. */
interface Batch {
  readonly client: OutboxClient;
  /** Gives the connection back (discards it, given an error). */
  readonly release: (error?: Error | boolean) => void;
  readonly ids: string[];
  readonly acked: string[];
  pending: number;
  nacked: number;
  /** Called when the last row was settled. */
  onSettled: (() => void) | undefined;
}

/**
 * One subscription's reading of the outbox (see postgresSource). Up to `maxBatches` read
 * transactions are open at once; each locks its rows (`FOR UPDATE SKIP LOCKED`, so the next
 * read and other gateways skip them), emits them in id order, deletes or marks the acked
 * ones when all are settled, and commits. A nack pauses reading until every open batch
 * committed and `retryBackoffMs` passed, so that refused rows come again in their order.
 */
export class OutboxReading {
  readonly #o: OutboxReadingOptions;
  readonly #lease: PoolLease;
  /** The SELECT of a read, less its xmin and tableoid (a view or a foreign table has none). */
  readonly #columns: string;
  readonly #from: string;
  readonly #settle: string;
  /**
   * Where the rows' message ids come from, found at the first read: the rows themselves (a
   * table: the cluster's system identifier, and each row's tableoid and xmin, see outboxRowId),
   * or `null`, a new id at each read (a view or a foreign table).
   */
  #rowIds: { readonly system: string } | null | undefined;
  readonly #batches = new Set<Batch>();
  readonly #timers = new Set<NodeJS.Timeout>();
  #listener: OutboxClient | undefined;
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
    const q = quoteIdentifier;
    const columns = [config.idColumn, config.payloadColumn, config.topicColumn, config.keyColumn, config.headersColumn].map((c) => (c === undefined ? 'NULL' : q(c)));
    const unmarked = config.delivered === 'mark' ? ` WHERE ${q(config.markColumn as string)} IS NULL` : '';
    this.#columns = `SELECT ${columns.join(', ')}`;
    this.#from = ` FROM ${quoteTable(table)}${unmarked} ORDER BY ${q(config.idColumn)} LIMIT ${config.batchSize} FOR UPDATE SKIP LOCKED`;
    // The ids come back as the server's text and go back as text[], compared as the column's type.
    this.#settle =
      config.delivered === 'mark'
        ? `UPDATE ${quoteTable(table)} SET ${q(config.markColumn as string)} = now() WHERE ${q(config.idColumn)}::text = ANY($1::text[])`
        : `DELETE FROM ${quoteTable(table)} WHERE ${q(config.idColumn)}::text = ANY($1::text[])`;
  }

  start(): void {
    this.#listen();
    this.#pump();
  }

  /** Unsubscribed: no more reads; open batches wait up to stopTimeoutMs for their rows, then commit what was acked. */
  async stop(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    const listener = this.#listener;
    this.#listener = undefined;
    if (listener !== undefined) {
      listener.removeAllListeners('notification');
      // Discarded rather than given back: it is still LISTENing.
      listener.release(true);
    }
    const open = [...this.#batches];
    await Promise.all(open.map((batch) => this.#finishWithin(batch, this.#o.config.stopTimeoutMs)));
    while (this.#reading) await new Promise((resolve) => setTimeout(resolve, 10));
    const unsettled = open.reduce((n, b) => n + b.pending, 0);
    if (unsettled > 0) this.#o.ctx.logger.info({ unsettled }, `${this.#o.component}: stopped with rows in flight; they stay in the outbox and are read again`);
    await this.#lease.release();
  }

  /** Reads while there is room and reason to. */
  #pump(): void {
    if (this.#stopping || this.#reading || !this.#wanted) return;
    if (this.#batches.size >= this.#o.config.maxBatches) return;
    const wait = this.#pausedUntil - Date.now();
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
        this.#pausedUntil = Date.now() + delay;
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
    try {
      this.#rowIds ??= await this.#findRowIds(client);
      const select = `${this.#columns}${this.#rowIds === null ? '' : ', xmin, tableoid'}${this.#from}`;
      await client.query('BEGIN');
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
    const binary = fields[1]?.dataTypeID === BYTEA;
    const batch: Batch = { client, release, ids: [], acked: [], pending: rows.length, nacked: 0, onSettled: undefined };
    this.#batches.add(batch);
    const settled = () => {
      batch.pending -= 1;
      if (batch.pending === 0) {
        if (batch.onSettled !== undefined) batch.onSettled();
        else this.#finish(batch);
      }
    };
    for (const row of rows) {
      const id = row[0] as string;
      batch.ids.push(id);
      const envelope = this.#envelope(row, binary);
      this.#o.subscriber.next(
        createDelivery(envelope, {
          onAck: () => {
            batch.acked.push(id);
            settled();
          },
          onNack: (error) => {
            batch.nacked += 1;
            this.#o.ctx.logger.debug({ err: error, id }, `${this.#o.component}: row ${id} refused; it is read again`);
            settled();
          },
        }),
      );
    }
    this.#o.ctx.counters.count('postgres.outbox.rows', { bridge: this.#o.ctx.bridge }, rows.length);
    return rows.length === this.#o.config.batchSize;
  }

  /** See #rowIds. */
  async #findRowIds(client: OutboxClient): Promise<{ readonly system: string } | null> {
    const table = quoteTable(this.#o.table);
    const kind = (await client.query<{ relkind: string }>('SELECT relkind FROM pg_class WHERE oid = $1::regclass', [table])).rows[0]?.relkind;
    if (kind !== 'r' && kind !== 'p') {
      this.#o.ctx.logger.info(`${this.#o.component}: ${describeTable(this.#o.table)} is not a table (no xmin): a row read again after a crash or a stop gets a new message id`);
      return null;
    }
    // A server that does not let this user read it: the connection's description stands in
    // for the cluster (a failover to another host then gives rows read again new ids).
    return client.query<{ system: string }>('SELECT system_identifier::text AS system FROM pg_control_system()').then(
      ({ rows }) => ({ system: rows[0]?.system ?? this.#o.settings.description }),
      () => ({ system: this.#o.settings.description }),
    );
  }

  #envelope(row: readonly (string | null)[], binary: boolean): Envelope {
    const [id, payload, topic, key, headers, xmin, tableoid] = row;
    const bytes = payload === null || payload === undefined ? new Uint8Array() : binary ? Buffer.from(payload.slice(2), 'hex') : payload;
    const rowIds = this.#rowIds;
    return createEnvelope({
      ...(rowIds && xmin && tableoid ? { id: outboxRowId(rowIds.system, tableoid, xmin, id as string) } : {}),
      topic: topic ?? describeTable(this.#o.table),
      payload: bytes,
      origin: { source: 'postgres' },
      ...(key === null || key === undefined ? {} : { key }),
      ...(headers === null || headers === undefined ? {} : { headers: stringHeaders(headers) }),
    });
  }

  /** Every row settled: delete or mark the acked ones and commit, then read on. */
  #finish(batch: Batch): Promise<void> {
    const done = (async () => {
      try {
        if (batch.acked.length > 0) await batch.client.query(this.#settle, [batch.acked]);
        await batch.client.query('COMMIT');
        batch.release();
      } catch (error) {
        batch.release(error instanceof Error ? error : true);
        this.#o.ctx.counters.count('postgres.outbox.errors', { bridge: this.#o.ctx.bridge });
        this.#o.ctx.logger.warn(
          { err: error, rows: batch.ids.length },
          `${this.#o.component}: cannot commit a batch of ${describeTable(this.#o.table)}: ${describePgError(error)}; its rows stay and are delivered again`,
        );
      }
    })().finally(() => {
      this.#batches.delete(batch);
      if (batch.nacked > 0) {
        this.#nackRounds += 1;
        const delay = backoffDelay({ initialMs: this.#o.config.retryBackoffMs, maxMs: MAX_BACKOFF_MS }, this.#nackRounds);
        this.#pausedUntil = Math.max(this.#pausedUntil, Date.now() + delay);
      } else if (batch.acked.length > 0) {
        this.#nackRounds = 0;
      }
      // Rows the batch left (nacked) are read again; and rows skipped while it held its slot.
      this.#wanted = true;
      this.#pump();
    });
    return done;
  }

  /** On stop: the batch's rows get up to `ms` to settle, then it commits what was acked. */
  #finishWithin(batch: Batch, ms: number): Promise<void> {
    if (batch.pending === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        batch.onSettled = () => {};
        resolve(this.#finish(batch));
      }, ms);
      batch.onSettled = () => {
        clearTimeout(timer);
        resolve(this.#finish(batch));
      };
    });
  }

  /** LISTENs on a connection of its own; a notification starts a read. Reconnects with backoff. */
  #listen(attempt = 1): void {
    const channel = this.#o.config.channel ?? this.#o.table.name;
    const connect = async () => {
      const pool = await this.#lease.pool;
      const client = (await pool.connect()) as OutboxClient;
      if (this.#stopping) {
        client.release(true);
        return;
      }
      client.on('notification', () => {
        this.#wanted = true;
        this.#pump();
      });
      client.on('error', (error) => {
        if (this.#listener !== client) return;
        this.#listener = undefined;
        client.removeAllListeners('notification');
        client.release(error);
        this.#o.ctx.logger.warn({ err: error }, `${this.#o.component}: the LISTEN connection failed; reconnecting`);
        this.#later(this.#o.config.retryBackoffMs, () => this.#listen());
      });
      try {
        await client.query(`LISTEN ${quoteIdentifier(channel)}`);
      } catch (error) {
        client.removeAllListeners('notification');
        client.release(error instanceof Error ? error : true);
        throw error;
      }
      // Stopped while the LISTEN ran: stop() found no listener to close, so this one is
      // discarded here, or the pool would wait for it for ever as it closes.
      if (this.#stopping) {
        client.removeAllListeners('notification');
        client.release(true);
        return;
      }
      this.#listener = client;
      // Rows written while nobody listened.
      this.#wanted = true;
      this.#pump();
    };
    connect().catch((error: unknown) => {
      if (this.#stopping) return;
      this.#o.ctx.counters.count('postgres.outbox.errors', { bridge: this.#o.ctx.bridge });
      const delay = backoffDelay({ initialMs: this.#o.config.retryBackoffMs, maxMs: MAX_BACKOFF_MS, jitter: 0.2 }, attempt);
      this.#o.ctx.logger.warn({ err: error, retryInMs: delay }, `${this.#o.component}: cannot LISTEN on ${channel}: ${describePgError(error)}; polling meanwhile`);
      this.#later(delay, () => this.#listen(attempt + 1));
    });
    this.#poll();
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

/** A headers column's JSON object, its values as strings; anything else gives no headers. */
function stringHeaders(text: string): Record<string, string> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return {};
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return {};
  return Object.fromEntries(Object.entries(parsed).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]));
}
