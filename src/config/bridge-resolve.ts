import { existsSync, readFileSync } from 'node:fs';
import module, { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { FROM_SOURCES, PACKAGE_ROOT } from '../package-root.ts';

/** Ferry's own package.json: bare imports a bridge cannot resolve from its own place resolve from here. */
const FERRY_PACKAGE = new URL('package.json', PACKAGE_ROOT);
/** The extension of the running build's modules: `.ts` from sources, `.js` compiled. */
const EXTENSION = FROM_SOURCES ? '.ts' : '.js';
/**
 * The public API of the build that is running: `src/index.ts` from sources, `dist/index.js`
 * compiled, `dist/app/index.js` in the bundled CLI (whose chunks sit one directory below it, as
 * this module sits one below `src/index.ts`). Its subpaths (`ferry/kafka`) are the package's
 * exports, beside it (entryPoints).
 */
const FERRY_API = new URL(`../index${EXTENSION}`, import.meta.url);
/**
 * The bundled CLI carries rxjs inside it, one file instead of rxjs' 223 CommonJS modules: a
 * bridge that imports `rxjs` or `rxjs/operators` gets that copy, so that the gateway runs one
 * rxjs, as long as its import would have found the rxjs Ferry is installed with. Absent from
 * the sources and the compiled library, which import rxjs from node_modules themselves.
 */
const BUNDLED = new URL('../vendor/', import.meta.url);
/** The modules the bundled CLI carries in `vendor/`, by the specifier they stand for (scripts/build.ts bundles these). */
export const BUNDLED_MODULES: Readonly<Record<string, string>> = { rxjs: 'rxjs.js', 'rxjs/operators': 'rxjs-operators.js' };

let registered = false;

/**
 * Lets TypeScript bridges anywhere on disk import `ferry` (Ferry's public API) and Ferry's own
 * dependencies (`rxjs`) without a node_modules of their own (issue 18): a bare specifier that
 * does not resolve from the bridge's directory is resolved again from Ferry's installation.
 * What a bridge's own node_modules provides still wins. Registered once, before the first
 * bridge is imported; needs Node's module.registerHooks (22.15 and later).
 */
export function resolveBridgeImportsFromFerry(): void {
  if (registered) return;
  registered = true;
  const register = (module as { registerHooks?: (hooks: { resolve: ResolveHook }) => unknown }).registerHooks;
  if (register === undefined) return;
  const bundled = bundledModules();
  register({
    resolve(specifier, context, nextResolve) {
      const api = ferryApi(specifier);
      if (api !== undefined) return { url: api, shortCircuit: true };
      let resolved: ReturnType<typeof nextResolve>;
      try {
        resolved = nextResolve(specifier, context);
      } catch (error) {
        if (!isBare(specifier) || (error as { code?: unknown }).code !== 'ERR_MODULE_NOT_FOUND') throw error;
        resolved = nextResolve(specifier, { ...context, parentURL: FERRY_PACKAGE.href });
      }
      return bundled?.(specifier, resolved.url) ?? resolved;
    },
  });
}

/** The URL of Ferry's API for `ferry` and `ferry/<subpath>`, else undefined. */
function ferryApi(specifier: string): string | undefined {
  if (specifier === 'ferry') return FERRY_API.href;
  if (!specifier.startsWith('ferry/')) return undefined;
  const entry = (subpaths ??= entryPoints(FERRY_PACKAGE)).get(specifier.slice('ferry/'.length));
  return entry === undefined ? undefined : new URL(`${entry}${EXTENSION}`, FERRY_API).href;
}

let subpaths: ReadonlyMap<string, string> | undefined;

/**
 * The package's subpath entry points (`exports` of its package.json, e.g. `./kafka`), each with
 * its module relative to the API's directory, without extension (`lib/kafka`), read from the
 * source path each one declares (`ferry-source`). The build bundles the same list.
 */
export function entryPoints(packageJson: URL): ReadonlyMap<string, string> {
  const { exports } = JSON.parse(readFileSync(packageJson, 'utf8')) as { exports: Record<string, { 'ferry-source'?: string } | string> };
  const entries = new Map<string, string>();
  for (const [subpath, target] of Object.entries(exports)) {
    const source = typeof target === 'object' ? target['ferry-source'] : undefined;
    if (subpath === '.' || source === undefined) continue;
    entries.set(subpath.slice('./'.length), source.replace(/^\.\/src\//, '').replace(/\.ts$/, ''));
  }
  return entries;
}

/**
 * In the bundled CLI: a function that swaps the rxjs Ferry is installed with for the copy in the
 * bundle (undefined when it is not Ferry's, e.g. a bridge's own node_modules holds another).
 */
function bundledModules(): ((specifier: string, url: string) => { url: string; shortCircuit: true } | undefined) | undefined {
  if (!existsSync(new URL(BUNDLED_MODULES['rxjs'] as string, BUNDLED))) return undefined;
  let ferrysRxjs: string;
  try {
    ferrysRxjs = `${pathToFileURL(dirname(createRequire(FERRY_PACKAGE).resolve('rxjs/package.json'))).href}/`;
  } catch {
    return undefined;
  }
  return (specifier, url) => {
    const file = Object.hasOwn(BUNDLED_MODULES, specifier) ? BUNDLED_MODULES[specifier] : undefined;
    return file !== undefined && url.startsWith(ferrysRxjs) ? { url: new URL(file, BUNDLED).href, shortCircuit: true } : undefined;
  };
}

type ResolveHook = (
  specifier: string,
  context: { parentURL?: string | undefined; conditions?: readonly string[]; importAttributes?: Record<string, string> },
  nextResolve: (specifier: string, context?: object) => { url: string; format?: string | null; shortCircuit?: boolean },
) => { url: string; format?: string | null; shortCircuit?: boolean };

function isBare(specifier: string): boolean {
  return !specifier.startsWith('.') && !specifier.startsWith('/') && !specifier.includes(':');
}

/** Set by bin/ferry.js when it registered tsx to run Ferry's own sources. */
const TSX_REGISTERED = Symbol.for('ferry.tsx-registered');

let typescriptLoader: Promise<void> | undefined;

/**
 * Makes `import()` of a `.ts` bridge work. Node strips types itself from 22.18 on (outside
 * node_modules); on an older Node 22 tsx's loader is registered, once, when the first
 * TypeScript bridge is loaded: a gateway of YAML bridges never loads tsx.
 */
export function ensureTypeScriptLoader(): Promise<void> {
  typescriptLoader ??= (async () => {
    const registry = globalThis as { [TSX_REGISTERED]?: boolean };
    if ((process.features as { typescript?: unknown }).typescript || registry[TSX_REGISTERED] === true) return;
    const { register } = await import('tsx/esm/api');
    register();
    registry[TSX_REGISTERED] = true;
  })();
  return typescriptLoader;
}

/** Ferry's installation directory (where its node_modules are). */
export function ferryRoot(): string {
  return fileURLToPath(new URL('.', FERRY_PACKAGE));
}
