import { isDeepStrictEqual } from 'node:util';
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { DatabaseConfig } from '../config/databases-schema.ts';
import type { Counters } from '../core/component.ts';
import { FerryError } from '../core/errors.ts';
import type { PostgresPools } from '../postgres/pools.ts';

/** Kysely and the two dialects: some 250 modules, loaded by `load()` only when something will use them. */
type Kit = Awaited<ReturnType<typeof loadKit>>;

async function loadKit() {
  const [{ Kysely }, { postgresDatabaseDialect }, { sqliteDialect }] = await Promise.all([import('kysely'), import('../postgres/kysely.ts'), import('../sqlite/kysely.ts')]);
  return { Kysely, postgresDatabaseDialect, sqliteDialect };
}

export interface DatabasesOptions {
  readonly logger: Logger;
  readonly counters: Counters;
  /** Directory of gateway.yaml: password and TLS files are relative to it. */
  readonly configDir: string;
  /** The gateway's data directory: SQLite files are relative to it. */
  readonly dataDir: string;
  /** `application_name` of PostgreSQL connections: the gateway's name. */
  readonly applicationName: string;
  readonly pools?: PostgresPools;
}

interface Open {
  readonly config: DatabaseConfig;
  readonly db: Kysely<unknown>;
}

/**
 * The databases of `gateway.yaml` (`databases:`), each a Kysely instance made on first use
 * and shared by every handler and `ferry migrate` in the process. PostgreSQL databases take
 * their connections from the process's pools (one per distinct connection settings, shared
 * with sinks and sources); SQLite files are opened in WAL mode. `close()` destroys them all;
 * `update()` destroys those a reload dropped or changed.
 */
export class Databases {
  #configs: Readonly<Record<string, DatabaseConfig>>;
  readonly #options: DatabasesOptions;
  readonly #open = new Map<string, Open>();
  #kit: Kit | undefined;

  constructor(configs: Readonly<Record<string, DatabaseConfig>>, options: DatabasesOptions) {
    this.#configs = configs;
    this.#options = options;
  }

  /**
   * Loads Kysely when `configs` (the running ones when absent) declare a database. Awaited
   * before the first `get`: the gateway calls it when a handler bridge is about to run (at
   * startup, or before a reload's `change`), `ferry migrate` before it migrates.
   */
  async load(configs: Readonly<Record<string, DatabaseConfig>> = this.#configs): Promise<void> {
    if (this.#kit === undefined && Object.keys(configs).length > 0) this.#kit = await loadKit();
  }

  /** The names declared. */
  get names(): string[] {
    return Object.keys(this.#configs);
  }

  /** The Kysely instance of database `name`, opened on first use; throws for a name not declared. */
  get<DB>(name: string): Kysely<DB> {
    const config = this.#configs[name];
    if (config === undefined) {
      const known = this.names;
      throw new FerryError(
        'CONFIG_INVALID',
        `no database '${name}' in gateway.yaml: ${known.length === 0 ? 'declare it under `databases:`' : `the databases are ${known.join(', ')}`}`,
        { retryable: false },
      );
    }
    let open = this.#open.get(name);
    if (open === undefined) {
      const kit = this.#kit;
      if (kit === undefined) throw new Error(`database '${name}': Databases.load() was not awaited before its first use`);
      open = { config, db: new kit.Kysely<unknown>({ dialect: this.#dialect(kit, name, config) }) };
      this.#open.set(name, open);
      this.#options.logger.info({ database: name, kind: Object.keys(config)[0] }, `database '${name}' opened`);
    }
    return open.db as Kysely<DB>;
  }

  /**
   * A reload: from now on `get` serves `next` (a changed database opens anew on its next use).
   * `changed` names databases to open anew although their settings are equal (a password or
   * TLS file they name was replaced). `commit(after)` destroys the instances of databases
   * dropped or changed once `after` settles (the bridges that may still use them stopped);
   * `revert()` (the reload was refused) puts the running settings and instances back.
   */
  change(next: Readonly<Record<string, DatabaseConfig>>, changed: readonly string[] = []): { commit(after: Promise<unknown>): Promise<string[]>; revert(): Promise<void> } {
    const previous = this.#configs;
    this.#configs = next;
    const closing: [string, Open][] = [...this.#open].filter(([name, open]) => changed.includes(name) || !isDeepStrictEqual(next[name], open.config));
    for (const [name] of closing) this.#open.delete(name);
    return {
      commit: async (after) => {
        await after.catch(() => {});
        await Promise.all(closing.map(([name, open]) => this.#destroy(name, open)));
        return closing.map(([name]) => name);
      },
      revert: async () => {
        this.#configs = previous;
        // Instances the new settings made meanwhile give way to the running ones.
        const made = closing.flatMap(([name]) => {
          const open = this.#open.get(name);
          return open === undefined ? [] : [[name, open] as [string, Open]];
        });
        for (const [name, open] of closing) this.#open.set(name, open);
        await Promise.all(made.map(([name, open]) => this.#destroy(name, open)));
      },
    };
  }

  /** Destroys every open database (the gateway stops). */
  async close(): Promise<void> {
    const open = [...this.#open];
    this.#open.clear();
    await Promise.all(open.map(([name, o]) => this.#destroy(name, o)));
  }

  async #destroy(name: string, open: Open): Promise<void> {
    try {
      await open.db.destroy();
      this.#options.logger.info({ database: name }, `database '${name}' closed`);
    } catch (error) {
      this.#options.logger.warn({ err: error, database: name }, `database '${name}': closing failed`);
    }
  }

  #dialect(kit: Kit, name: string, config: DatabaseConfig) {
    if ('sqlite' in config) return kit.sqliteDialect(config.sqlite, this.#options.dataDir);
    const { applicationName, configDir, counters, logger, pools } = this.#options;
    return kit.postgresDatabaseDialect(config.postgres, {
      applicationName,
      configDir,
      component: `database '${name}'`,
      metricLabel: `database:${name}`,
      counters,
      logger,
      logFields: { database: name },
      ...(pools === undefined ? {} : { pools }),
    });
  }
}
