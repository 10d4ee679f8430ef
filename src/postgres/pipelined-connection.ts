import { MAX_TIMER_MS } from '../core/timer-limit.ts';
import type { PgPoolClient, PgResult } from './pools.ts';

/** A statement pg prepares once per connection under `name` (a name always carries the same text). */
export interface NamedStatement {
  readonly name: string;
  readonly text: string;
  readonly values: unknown[];
}

/** pg's pooled Client as this module drives it. */
interface PipelineClient {
  /** pg >= 8.23: queries are written at once instead of each after the reply to the one before. */
  pipeline: boolean;
  query<R>(config: { name?: string; text: string; values?: unknown[] | undefined; query_timeout?: number }): Promise<PgResult<R> & { command?: string }>;
  release(error?: Error): void;
}

/** A statement sent and not yet answered. */
interface Waiting {
  /** Fails its reply (with the reply timeout's error). */
  fail: (error: Error) => void;
}

/**
 * A connection of the pool while the sink holds it: pipelined (pg writes each statement at once,
 * without waiting for the replies to the ones before), with a reply timeout of Ferry's own.
 *
 * pg's reply timeout (`query_timeout`) starts when a statement is queued on the client. With
 * statements pipelined, the server runs each only after the ones sent before it, so the third of
 * three inserts of 0.6 s each waits 1.2 s before it starts: with a reply timeout of 1.1 s pg gave
 * the connection up (`Query read timeout`) while the server was working through the statements,
 * and the sink reconnected and wrote its batches again (the transaction left behind still ran,
 * and its rows' locks held up the new one). Here pg's timer is off for every statement (a
 * per-statement `query_timeout` of MAX_TIMER_MS, which pg takes over the pool's: the regression
 * test test/integration/postgres-sink-slow-pipeline.test.ts fails if a version of pg stops
 * doing so), and one timer of `replyTimeoutMs` runs for the oldest statement not answered: from
 * when it was sent if nothing was ahead of it, else from the reply to the one before it, when
 * the server could start it. A server that runs every statement within its statement_timeout
 * answers each in time however many are in line; a network cut off (no reply, no error) is
 * noticed `replyTimeoutMs` after the last reply at the latest, as before: the statement's reply
 * fails (no SQLSTATE: `connectionLost`) and `lost` hears of it, which discards the connection
 * (its socket is destroyed, failing the statements behind it).
 */
export class PipelinedConnection {
  readonly #client: PipelineClient;
  readonly #replyTimeoutMs: number;
  readonly #lost: (error: Error) => void;
  /** In the order sent, which is the order the server runs and answers them. */
  readonly #waiting: Waiting[] = [];
  #timer: NodeJS.Timeout | undefined;
  /** Released, or given up: no timer runs any more. */
  #done = false;

  /** `replyTimeoutMs` 0 sets no timeout: every reply is waited for as long as it takes. */
  constructor(client: PgPoolClient, replyTimeoutMs: number, lost: (error: Error) => void) {
    this.#client = client as unknown as PipelineClient;
    this.#client.pipeline = true;
    this.#replyTimeoutMs = Math.min(replyTimeoutMs, MAX_TIMER_MS);
    this.#lost = lost;
  }

  /** Sends a statement (a named one is prepared once per connection); the reply, or why there is none. */
  query<R = Record<string, unknown>>(statement: string | NamedStatement, values?: unknown[]): Promise<PgResult<R> & { command?: string }> {
    const config = typeof statement === 'string' ? { text: statement, values } : statement;
    if (this.#replyTimeoutMs === 0) return this.#client.query<R>(config);
    const reply = this.#client.query<R>({ ...config, query_timeout: MAX_TIMER_MS });
    const waiting: Waiting = { fail: () => {} };
    const late = new Promise<never>((_, reject) => {
      waiting.fail = reject;
    });
    this.#waiting.push(waiting);
    if (this.#waiting.length === 1) this.#startClock();
    const answered = () => this.#answered(waiting);
    reply.then(answered, answered);
    return Promise.race([reply, late]);
  }

  /** Gives the connection back to the pool; with an error, the pool discards it (destroying its socket while a statement waits). */
  release(error?: Error): void {
    this.#stop();
    // Out of pipeline mode, pg's end() destroys the socket of a client with a statement waiting
    // instead of waiting for its replies.
    this.#client.pipeline = false;
    this.#client.release(error);
  }

  #answered(waiting: Waiting): void {
    const i = this.#waiting.indexOf(waiting);
    if (i === -1) return;
    this.#waiting.splice(i, 1);
    if (i !== 0) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#waiting.length > 0) this.#startClock();
  }

  /** The clock of the oldest statement not answered: the server runs it now, or has nothing to run. */
  #startClock(): void {
    if (this.#done) return;
    this.#timer = setTimeout(() => {
      const ms = this.#replyTimeoutMs;
      const error = new Error(`no reply from the server within ${ms} ms (statementTimeoutMs plus connectTimeoutMs) of when it could run the statement; the connection is given up`);
      this.#waiting[0]?.fail(error);
      this.#stop();
      this.#lost(error);
    }, this.#replyTimeoutMs);
  }

  #stop(): void {
    this.#done = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
