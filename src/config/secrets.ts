import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Env } from './interpolate.ts';

/**
 * Where a secret (a database password) is kept: an environment variable, named, or a file
 * (a mounted secret), so that the config holds only where it is and never the secret itself.
 * One of the two is set.
 */
export interface SecretSource {
  readonly env?: string | undefined;
  readonly file?: string | undefined;
}

/**
 * Reads a secret when a component starts, or says why it cannot: the variable is unset, the
 * file cannot be read. The reason names the variable or the file, never the value. A file's
 * one trailing newline is dropped (as `echo secret > file` leaves it). Relative files are
 * relative to `baseDir`, the directory of the file that names them.
 */
export function readSecret(source: SecretSource, baseDir: string, env: Env = process.env): { value: string } | { problem: string } {
  if (source.env !== undefined) {
    const value = env[source.env];
    if (value === undefined || value === '') return { problem: `the environment variable ${source.env} is not set` };
    return { value };
  }
  if (source.file === undefined) return { problem: 'neither a variable nor a file is named' };
  const path = resolve(baseDir, source.file);
  try {
    return { value: readFileSync(path, 'utf8').replace(/\r?\n$/, '') };
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return { problem: code === 'ENOENT' ? `no such file: ${path}` : `cannot read ${path}: ${code ?? String(error)}` };
  }
}

/** Reads a PEM file named in a component's config (checked at config load; read when the component starts). */
export function readPemFile(file: string, baseDir: string): { pem: Buffer } | { problem: string } {
  const path = resolve(baseDir, file);
  try {
    return { pem: readFileSync(path) };
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return { problem: code === 'ENOENT' ? `no such file: ${path}` : `cannot read ${path}: ${code ?? String(error)}` };
  }
}
