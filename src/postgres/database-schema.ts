import { z } from 'zod';
import { connectionFields, refineConnection } from './connection.ts';
import { lazySchema } from '../core/lazy-schema.ts';

/** A PostgreSQL database for handlers and `ferry migrate`: the connection settings every Postgres component takes. */
export const postgresDatabaseSchema = lazySchema(() =>
  z
    .strictObject(connectionFields())
    .superRefine((config, ctx) => refineConnection(config, ctx))
    .meta({
      description:
        'A PostgreSQL database: the connection settings of the postgres sink and source (`url`, or `host` with `database` and `user`; `password`, `ssl`, `poolSize`, timeouts).',
    }),
);

export type PostgresDatabaseConfig = z.output<ReturnType<typeof postgresDatabaseSchema>>;
