import { z } from 'zod';
import { postgresDatabaseSchema } from '../postgres/database-schema.ts';
import { sqliteDatabaseSchema } from '../sqlite/database-schema.ts';
import { lazySchema } from '../core/lazy-schema.ts';

export const databaseName = z.string().regex(/^[A-Za-z][A-Za-z0-9_-]{0,62}$/, 'a database name is letters, digits, "_" and "-", starting with a letter');

/** One database: a one-key map of its kind to its settings, as sources and sinks are written. */
export const databaseSchema = lazySchema(() => z.union([z.strictObject({ postgres: postgresDatabaseSchema() }), z.strictObject({ sqlite: sqliteDatabaseSchema() })]));

export type DatabaseConfig = z.output<ReturnType<typeof databaseSchema>>;

export const databasesSchema = lazySchema(() =>
  z
    .record(databaseName, databaseSchema())
    .default({})
    .meta({
      description:
        'Databases for custom handlers (`tools.database(name)`, a typed Kysely instance) and `ferry migrate`, by name: `{postgres: {url: ...}}` or `{sqlite: {file: app.db}}`. Ferry opens each on first use, shares its pool, and closes it on shutdown or when a reload drops or changes it.',
      examples: [{ main: { postgres: { url: '${POSTGRES_URL}' } }, local: { sqlite: { file: 'app.db' } } }],
    }),
);
