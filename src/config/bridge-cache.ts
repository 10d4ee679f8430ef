import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import module from 'node:module';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { PACKAGE_ROOT } from '../package-root.ts';

/**
 * Where TypeScript bridges are kept with their types stripped: FERRY_CACHE_DIR, else
 * $XDG_CACHE_HOME/ferry, else ~/.cache/ferry; `bridges/` below it. Per user, like the rest of a
 * user's cache.
 */
export function bridgeCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(env['FERRY_CACHE_DIR'] || join(env['XDG_CACHE_HOME'] || join(homedir(), '.cache'), 'ferry'), 'bridges');
}

/** A bridge module as loadBridgeModule imports it: its file's URL with ?v=<hash of its contents>. */
const BRIDGE_URL = /^file:\/\/[^?#]+\.m?ts\?v=([0-9a-f]{16})$/;
/** Another TypeScript file, such as a module a bridge imports (`./lib/repository.ts`). */
const TYPESCRIPT_FILE = /^file:\/\/[^?#]+\.m?ts$/;
/** Ferry's own sources (when it runs from them): not a bridge's, so not kept here. */
const OWN_SOURCES = new URL('src/', PACKAGE_ROOT).href;

type LoadResult = { format?: string | null; source?: string | ArrayBuffer | ArrayBufferView | null; shortCircuit?: boolean };
type LoadHook = (url: string, context: object, nextLoad: (url: string, context?: object) => LoadResult) => LoadResult;

let registered = false;

/**
 * Keeps each TypeScript bridge, and each TypeScript module bridges import, with its types
 * stripped, by the hash of its text: a start whose bridges did not change imports them as
 * JavaScript, and Node's type stripper (a WebAssembly module: about 0.1 s of CPU and 16 MB of
 * memory, for example bridges that may well be off) is not loaded at all. Stripping keeps every
 * line and column, so errors point at the same place. Only what Node would strip itself is
 * cached (format `module-typescript`; never a file under node_modules, which Node refuses to
 * strip, nor Ferry's own sources); anything else, or a failure to strip or to write the cache,
 * goes Node's own way, which reports the problem.
 */
export function cacheStrippedBridges(dir = bridgeCacheDir()): void {
  if (registered) return;
  registered = true;
  const hooks = module as { registerHooks?: (hooks: { load: LoadHook }) => unknown; stripTypeScriptTypes?: (code: string) => string };
  if (hooks.registerHooks === undefined || hooks.stripTypeScriptTypes === undefined) return;
  const strip = hooks.stripTypeScriptTypes;
  const version = process.versions.node;
  const cached = (hash: string) => join(dir, `${hash}-node${version}.js`);
  const read = (file: string): LoadResult | undefined => {
    try {
      return { format: 'module', source: readFileSync(file, 'utf8'), shortCircuit: true };
    } catch {
      return undefined; // not cached yet
    }
  };
  hooks.registerHooks({
    load(url, context, nextLoad) {
      // A bridge's hash is in its URL: its cached text is found without reading the file.
      const named = BRIDGE_URL.exec(url)?.[1];
      if (named !== undefined) {
        const hit = read(cached(named));
        if (hit !== undefined) return hit;
      } else if (!TYPESCRIPT_FILE.test(url) || url.includes('/node_modules/') || url.startsWith(OWN_SOURCES)) {
        return nextLoad(url, context);
      }
      const loaded = nextLoad(url, context);
      if (loaded.format !== 'module-typescript' || loaded.source === undefined || loaded.source === null) return loaded;
      const text = typeof loaded.source === 'string' ? loaded.source : Buffer.from(loaded.source as ArrayBuffer).toString('utf8');
      const file = cached(named ?? createHash('sha256').update(text).digest('hex').slice(0, 16));
      if (named === undefined) {
        const hit = read(file);
        if (hit !== undefined) return hit;
      }
      let source: string;
      try {
        source = withoutExperimentalWarning(() => strip(text));
      } catch {
        return loaded;
      }
      try {
        mkdirSync(dir, { recursive: true, mode: 0o700 });
        const partial = `${file}.${process.pid}.tmp`;
        writeFileSync(partial, source, { mode: 0o600 });
        renameSync(partial, file);
      } catch {
        // A cache that cannot be written costs the next start the stripping again, nothing more.
      }
      return { format: 'module', source, shortCircuit: true };
    },
  });
}

/**
 * Runs `fn` without the one-time ExperimentalWarning of module.stripTypeScriptTypes on stderr:
 * Node strips a bridge's types the same way (without a warning) when it imports it itself, and
 * `ferry validate`'s output is read by programs.
 */
function withoutExperimentalWarning<T>(fn: () => T): T {
  const emit = process.emitWarning;
  process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
    const text = typeof warning === 'string' ? warning : warning.message;
    if (text.includes('stripTypeScriptTypes')) return;
    (emit as (...args: unknown[]) => void).call(process, warning, ...rest);
  }) as typeof process.emitWarning;
  try {
    return fn();
  } finally {
    process.emitWarning = emit;
  }
}
