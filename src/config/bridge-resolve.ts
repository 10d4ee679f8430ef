import module from 'node:module';
import { fileURLToPath } from 'node:url';

/** Ferry's own package.json: bare imports a bridge cannot resolve from its own place resolve from here. */
const FERRY_PACKAGE = new URL('../../package.json', import.meta.url);
/** The public API of the build that is running: `src/index.ts` from sources, `dist/index.js` compiled. */
const FERRY_API = new URL(import.meta.url.endsWith('.ts') ? '../index.ts' : '../index.js', import.meta.url);

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
  register({
    resolve(specifier, context, nextResolve) {
      if (specifier === 'ferry') return { url: FERRY_API.href, shortCircuit: true };
      try {
        return nextResolve(specifier, context);
      } catch (error) {
        if (!isBare(specifier) || (error as { code?: unknown }).code !== 'ERR_MODULE_NOT_FOUND') throw error;
        return nextResolve(specifier, { ...context, parentURL: FERRY_PACKAGE.href });
      }
    },
  });
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
