import { createHmac, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { FileAt, SinkComponent, SourceComponent } from '../core/component.ts';
import { connectionFiles } from '../postgres/connection.ts';
import type { DatabaseConfig } from './databases-schema.ts';
import { formatPath } from './issues.ts';

/**
 * The contents of the files a config names (a password file, TLS certificates and keys), by
 * key path (`to[0].postgres.password.file`): part of the config, so that a reload that finds
 * a file replaced in place (same path, new content, as a rotated secret is) sees a change.
 * Values are keyed hashes, never contents: they only need to compare within this process, and
 * a hash of a short password could be guessed back where a plain one would be shown.
 */
export type FileDigests = Readonly<Record<string, string>>;

/** The key of this process's hashes: a config loaded by another process never compares with one loaded here. */
const KEY = randomBytes(32);

/** A keyed hash of a file's content, or why it cannot be read (`unreadable: ENOENT`), which is compared too. */
export function fileDigest(path: string): string {
  try {
    return createHmac('sha256', KEY).update(readFileSync(path)).digest('base64url');
  } catch (error) {
    return `unreadable: ${(error as NodeJS.ErrnoException).code ?? String(error)}`;
  }
}

/** The digests of `files`, relative to `base`, each keyed by its key path below `at`. */
export function digestFiles(files: readonly FileAt[], at: readonly (string | number)[], base: string): Record<string, string> {
  return Object.fromEntries(files.map(({ path, file }) => [formatPath([...at, ...path]), fileDigest(resolve(base, file))]));
}

/** A bridge's source or one of its sinks: its one-key map of kind to settings, its key path (`['from']`, `['to', 0]`, `['to', 'alerts']`) and the kinds of its side. */
export interface ComponentEntry {
  readonly at: readonly (string | number)[];
  readonly entry: Readonly<Record<string, unknown>>;
  readonly components: readonly (SourceComponent | SinkComponent)[];
}

/** The digests of the files a bridge's source and sinks name (`files()` of each kind), relative to `base`, the bridge file's directory. */
export function componentFileDigests(entries: readonly ComponentEntry[], base: string): FileDigests {
  const out: Record<string, string> = {};
  for (const { at, entry, components } of entries) {
    const [kind, config] = Object.entries(entry)[0] ?? [];
    const files = components.find((c) => c.kind === kind)?.files?.(config) ?? [];
    Object.assign(out, digestFiles(files, [...at, kind as string], base));
  }
  return out;
}

/** `bridge` with the digests of the files its components read (none: as it is), so that a reload compares their contents. */
export function withFileDigests<T extends object>(bridge: T, fileDigests: FileDigests): T {
  return Object.keys(fileDigests).length === 0 ? bridge : { ...bridge, fileDigests };
}

/** The digests of the files of each PostgreSQL database of gateway.yaml that names any, relative to `base`, its directory. */
export function databaseFileDigests(databases: Readonly<Record<string, DatabaseConfig>>, base: string): Record<string, FileDigests> {
  const out: Record<string, FileDigests> = {};
  for (const [name, database] of Object.entries(databases)) {
    const files = 'postgres' in database ? connectionFiles(database.postgres) : [];
    if (files.length > 0) out[name] = digestFiles(files, [], base);
  }
  return out;
}
