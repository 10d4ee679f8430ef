import { backoffDelay } from '../core/backoff.ts';
import type { ComponentContext } from '../core/component.ts';
import { describePgError } from './errors.ts';
import { quoteIdentifier } from './identifiers.ts';
import { type OutboxClient, firstReply } from './outbox-rows.ts';
import type { PoolLease } from './pools.ts';

const MAX_BACKOFF_MS = 60_000;

export interface OutboxListenerOptions {
  readonly lease: PoolLease;
  readonly channel: string;
  /** How often the connection is asked a `SELECT 1`; one not answered by the next says it is gone. */
  readonly heartbeatMs: number;
  /** How long the LISTEN statement may take (see firstReply): it is the first on a connection taken from the pool, which may have been cut off. */
  readonly listenTimeoutMs: number;
  readonly retryBackoffMs: number;
  readonly component: string;
  readonly ctx: ComponentContext;
  /** A notification came, or LISTEN started again (rows may have been written while nobody listened): read. */
  readonly onWake: () => void;
}

/**
 * The LISTEN of an outbox reading, on a connection of its own, started again (with backoff)
 * whenever that connection fails.
 *
 * A network cut off tells neither end: the connection looks open, no notification comes, and
 * TCP's keepalive notices only hours later (the kernel's defaults). So the connection is asked a
 * `SELECT 1` every `heartbeatMs`, and one that has not answered by the next beat is given up
 * (destroyed): the cut is noticed within twice `heartbeatMs`, and LISTEN runs again on a new
 * connection, so that notifications wake reading again as soon as the path is back. The
 * LISTEN statement gets `listenTimeoutMs` (firstReply): an idle connection the pool hands out
 * may have been cut off too.
 */
export class OutboxListener {
  readonly #o: OutboxListenerOptions;
  #client: OutboxClient | undefined;
  #heartbeat: NodeJS.Timeout | undefined;
  #retry: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(options: OutboxListenerOptions) {
    this.#o = options;
  }

  start(): void {
    this.#connect(1);
  }

  /** Discards the connection (it is still LISTENing) and stops reconnecting. */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#retry);
    clearInterval(this.#heartbeat);
    const client = this.#client;
    this.#client = undefined;
    if (client !== undefined) {
      client.removeAllListeners('notification');
      client.release(true);
    }
  }

  #connect(attempt: number): void {
    this.#open().catch((error: unknown) => {
      if (this.#stopped) return;
      const { ctx, component, channel } = this.#o;
      ctx.counters.count('postgres.outbox.errors', { bridge: ctx.bridge });
      const delay = backoffDelay({ initialMs: this.#o.retryBackoffMs, maxMs: MAX_BACKOFF_MS, jitter: 0.2 }, attempt);
      ctx.logger.warn({ err: error, retryInMs: delay }, `${component}: cannot LISTEN on ${channel}: ${describePgError(error)}; polling meanwhile`);
      this.#later(delay, () => this.#connect(attempt + 1));
    });
  }

  async #open(): Promise<void> {
    const pool = await this.#o.lease.pool;
    const client = (await pool.connect()) as OutboxClient;
    if (this.#stopped) {
      client.release(true);
      return;
    }
    client.on('notification', () => this.#o.onWake());
    client.on('error', (error) => this.#lost(client, error, `${this.#o.component}: the LISTEN connection failed; reconnecting`));
    try {
      await firstReply(client.query(`LISTEN ${quoteIdentifier(this.#o.channel)}`), this.#o.listenTimeoutMs, 'LISTEN');
    } catch (error) {
      client.removeAllListeners('notification');
      client.release(error instanceof Error ? error : true);
      throw error;
    }
    // Stopped while the LISTEN ran: stop() found no connection to close, so this one is
    // discarded here, or the pool would wait for it for ever as it closes.
    if (this.#stopped) {
      client.removeAllListeners('notification');
      client.release(true);
      return;
    }
    this.#client = client;
    this.#beat(client);
    this.#o.onWake();
  }

  /** A `SELECT 1` every heartbeatMs; the connection is given up when the one before has not answered. */
  #beat(client: OutboxClient): void {
    const ms = this.#o.heartbeatMs;
    let answered = true;
    this.#heartbeat = setInterval(() => {
      if (!answered) {
        const message = `${this.#o.component}: the LISTEN connection did not answer a heartbeat within ${ms} ms (a network cut off?); reconnecting`;
        this.#lost(client, new Error(`no reply to SELECT 1 within ${ms} ms`), message);
        return;
      }
      answered = false;
      // A failure leaves `answered` false: the next beat gives the connection up (and a
      // connection that failed says so at once, by its 'error' event).
      client.query('SELECT 1').then(
        () => {
          answered = true;
        },
        () => {},
      );
    }, ms);
  }

  /** The connection failed or stopped answering: discarded (destroyed, with a statement still waiting), and LISTEN runs again on a new one. */
  #lost(client: OutboxClient, error: Error, message: string): void {
    if (this.#client !== client || this.#stopped) return;
    this.#client = undefined;
    clearInterval(this.#heartbeat);
    client.removeAllListeners('notification');
    client.release(error);
    this.#o.ctx.counters.count('postgres.outbox.errors', { bridge: this.#o.ctx.bridge });
    this.#o.ctx.logger.warn({ err: error }, message);
    this.#later(this.#o.retryBackoffMs, () => this.#connect(1));
  }

  #later(ms: number, run: () => void): void {
    if (this.#stopped) return;
    clearTimeout(this.#retry);
    this.#retry = setTimeout(run, ms);
  }
}
