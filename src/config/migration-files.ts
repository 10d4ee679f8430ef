import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Migration, MigrationProvider } from 'kysely/migration';
import { FerryError } from '../core/errors.ts';
import { resolveBridgeImportsFromFerry } from './bridge-resolve.ts';

/** A migration file name: what `ferry migrate create` writes, `<UTC timestamp>_<name>.ts`, or any name sorting in the wanted order. */
const MIGRATION_FILE = /^[A-Za-z0-9][A-Za-z0-9_.-]*\.(ts|mts|js|mjs)$/;

/**
 * The migrations of a directory, for Kysely's Migrator: every `*.ts` (or `.js`) file, named
 * by its file name without the extension, applied in the order of those names. Each exports
 * `up(db)` and, to be reverted, `down(db)`. They are imported the way TypeScript bridges are:
 * `import { sql } from 'kysely'` resolves from Ferry's own installation.
 */
export class MigrationFiles implements MigrationProvider {
  readonly #dir: string;

  constructor(dir: string) {
    this.#dir = dir;
  }

  /** The file names (no extension) in order; throws a CONFIG_NOT_FOUND FerryError when the directory is missing. */
  names(): string[] {
    return this.#files().map((f) => f.name);
  }

  async getMigrations(): Promise<Record<string, Migration>> {
    resolveBridgeImportsFromFerry();
    const migrations: Record<string, Migration> = {};
    for (const { name, file } of this.#files()) {
      const path = join(this.#dir, file);
      let module: { up?: unknown; down?: unknown };
      try {
        const version = createHash('sha256').update(readFileSync(path)).digest('hex').slice(0, 16);
        module = (await import(`${pathToFileURL(path).href}?v=${version}`)) as typeof module;
      } catch (error) {
        throw new FerryError('CONFIG_INVALID', `${path}: cannot load this migration: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
      }
      if (typeof module.up !== 'function') throw new FerryError('CONFIG_INVALID', `${path}: a migration exports \`async function up(db: Kysely<any>)\``);
      if (module.down !== undefined && typeof module.down !== 'function') throw new FerryError('CONFIG_INVALID', `${path}: \`down\` must be a function`);
      migrations[name] = module as Migration;
    }
    return migrations;
  }

  #files(): { name: string; file: string }[] {
    let entries: string[];
    try {
      entries = readdirSync(this.#dir);
    } catch (error) {
      throw new FerryError('CONFIG_NOT_FOUND', `no migrations directory at ${this.#dir} (pass --dir, or make one with \`ferry migrate create NAME\`)`, { cause: error });
    }
    return entries
      .filter((f) => MIGRATION_FILE.test(f) && !f.endsWith('.d.ts'))
      .map((file) => ({ file, name: file.replace(/\.(ts|mts|js|mjs)$/, '') }))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }
}

/** What `ferry migrate create NAME` writes. */
export function migrationTemplate(name: string): string {
  return `// Migration ${name}: \`ferry migrate up\` applies it, \`ferry migrate down\` reverts it.
// See https://kysely.dev/docs/migrations for the schema builder.
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('example')
    .addColumn('id', 'integer', (c) => c.primaryKey())
    .addColumn('created_at', 'text', (c) => c.notNull().defaultTo(sql\`CURRENT_TIMESTAMP\`))
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('example').execute();
}
`;
}
