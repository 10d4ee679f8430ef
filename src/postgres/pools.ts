import type { PoolOptions, PoolSettings } from './connection.ts';

/** A statement's result, as much of it as Ferry reads. */
export interface PgResult<R> {
  readonly rows: R[];
  readonly rowCount: number | null;
}

/** The part of pg's Client and Pool that Ferry calls. */
export interface PgQueryable {
  query<R = Record<string, unknown>>(text: string, values?: unknown[]): Promise<PgResult<R>>;
}

/** A connection taken from a pool; `release(error)` with an error discards it instead of reusing it. */
export interface PgPoolClient extends PgQueryable {
  release(error?: Error | boolean): void;
}

/** The part of pg's Pool that Ferry calls. */
export interface PgPool extends PgQueryable {
  connect(): Promise<PgPoolClient>;
  /** Closes idle connections now and the others when released. */
  end(): Promise<void>;
  /** An idle connection failed (the server restarted): pg drops it; without a listener the process would crash. */
  on(event: 'error', listener: (error: Error) => void): unknown;
}

export type PgPoolFactory = (options: PoolOptions) => PgPool | Promise<PgPool>;

/** pg, loaded on first use so that a gateway without Postgres bridges does not pay for it. */
const pgPool: PgPoolFactory = async (options) => {
  const pg = (await import('pg')).default;
  const pool = new pg.Pool({ ...options, ssl: options.ssl === false ? false : { ...options.ssl } });
  // pg emits a connection's failure (the server restarted, the backend was ended) as an 'error'
  // event on its client, and the pool listens only while the client is idle: on a client a
  // component holds, nobody would hear it and the process would end. The holder learns of it
  // from the statement it runs; the pool discards the client when it is released.
  const held = () => {};
  pool.on('acquire', (client) => client.on('error', held));
  pool.on('release', (_error, client) => client.off('error', held));
  return pool as unknown as PgPool;
};

/** A share of a pool: `release` gives it back once; the last share closes the pool. */
export interface PoolLease {
  readonly pool: Promise<PgPool>;
  release(): Promise<void>;
}

interface Entry {
  users: number;
  readonly pool: Promise<PgPool>;
  /** Who hears about errors of idle connections: the lessees, first come first. */
  readonly listeners: ((error: Error) => void)[];
}

/**
 * The process's Postgres pools, one per distinct connection settings (user, server, TLS,
 * pool size, timeouts), shared by every component that names the same, and closed when
 * the last of them stops.
 */
export class PostgresPools {
  readonly #factory: PgPoolFactory;
  readonly #entries = new Map<string, Entry>();

  constructor(factory: PgPoolFactory = pgPool) {
    this.#factory = factory;
  }

  /** Pools open now (for tests and status). */
  get size(): number {
    return this.#entries.size;
  }

  /**
   * Takes a share of the pool for `settings`, making it on first use. `onIdleError` hears
   * about connections that failed while idle (only the oldest lessee's is called, so that a
   * shared pool's error is logged once).
   */
  acquire(settings: PoolSettings, onIdleError: (error: Error) => void): PoolLease {
    let entry = this.#entries.get(settings.key);
    if (entry === undefined) {
      const listeners: ((error: Error) => void)[] = [];
      const pool = Promise.resolve()
        .then(() => this.#factory(settings.options))
        .then((made) => {
          made.on('error', (error) => listeners[0]?.(error));
          return made;
        });
      pool.catch(() => {}); // reported to whoever awaits it
      entry = { users: 0, pool, listeners };
      this.#entries.set(settings.key, entry);
    }
    const held = entry;
    held.users += 1;
    held.listeners.push(onIdleError);
    let released = false;
    return {
      pool: held.pool,
      release: async () => {
        if (released) return;
        released = true;
        held.listeners.splice(held.listeners.indexOf(onIdleError), 1);
        held.users -= 1;
        if (held.users > 0) return;
        if (this.#entries.get(settings.key) === held) this.#entries.delete(settings.key);
        const pool = await held.pool.catch(() => undefined);
        await pool?.end().catch(() => {});
      },
    };
  }
}

/**
 * The pools of this process. Module state, which Ferry otherwise avoids: sharing connections
 * between bridges is what it is for, the runtime hands components no shared objects of this
 * kind yet, and an entry lives only while some component holds it, so nothing outlives its
 * users (tests included).
 */
export const processPools = new PostgresPools();
