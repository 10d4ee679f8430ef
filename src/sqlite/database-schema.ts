import { isAbsolute, resolve } from 'node:path';
import { z } from 'zod';
import { lazySchema } from '../core/lazy-schema.ts';
import { MAX_TIMER_MESSAGE, MAX_TIMER_MS } from '../core/timer-limit.ts';

/** A SQLite database file for handlers and `ferry migrate`. */
export const sqliteDatabaseSchema = lazySchema(() =>
  z
    .strictObject({
      file: z
        .string()
        .min(1)
        .meta({
          description: "The database file, made when missing; relative paths are relative to the gateway's data directory (`gateway.dataDir`).",
          examples: ['app.db', '/var/lib/ferry/app.db'],
        }),
      synchronous: z
        .enum(['full', 'normal'])
        .default('full')
        .meta({
          description: '`full`: a commit survives a power cut (one fsync per commit); `normal`: it survives a crash of the process, and commits are much faster.',
          examples: ['normal'],
        }),
      busyTimeoutMs: z
        .int()
        .min(0)
        .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
        .default(5000)
        .meta({ description: "How long a statement waits for another connection's write lock (another process on the same file).", examples: [5000] }),
    })
    .meta({ description: 'A SQLite database (better-sqlite3, WAL mode): one file on the gateway, for state handlers keep locally.' }),
);

export type SqliteDatabaseConfig = z.output<ReturnType<typeof sqliteDatabaseSchema>>;

/** Where the file of `config` is. */
export function sqliteDatabasePath(config: SqliteDatabaseConfig, dataDir: string): string {
  return isAbsolute(config.file) ? config.file : resolve(dataDir, config.file);
}
