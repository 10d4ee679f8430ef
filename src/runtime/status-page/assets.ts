import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { FROM_SOURCES, PACKAGE_ROOT } from '../../package-root.ts';

/** A file of the status page, as the admin server sends it. */
export interface PageAsset {
  readonly type: string;
  readonly body: Buffer;
}

/** This directory in the build that runs: src/ or dist/ (where the build copies the files; the bundled CLI's chunks sit elsewhere). */
const PAGE_DIR = new URL(`${FROM_SOURCES ? 'src' : 'dist'}/runtime/status-page/`, PACKAGE_ROOT);
const here = (file: string) => fileURLToPath(new URL(file, PAGE_DIR));
const dependency = (file: string) => createRequire(import.meta.url).resolve(file);

/**
 * The status page's files by URL path: its own HTML, script and style beside this module, and
 * uPlot (the charts) from its npm package, served by the gateway itself so that the page works
 * without a network. Plain files, no build step.
 */
const FILES: Readonly<Record<string, { readonly file: () => string; readonly type: string }>> = {
  '/': { file: () => here('index.html'), type: 'text/html; charset=utf-8' },
  '/ui/status.js': { file: () => here('status.js'), type: 'text/javascript; charset=utf-8' },
  '/ui/status.css': { file: () => here('status.css'), type: 'text/css; charset=utf-8' },
  '/ui/uplot.js': { file: () => dependency('uplot/dist/uPlot.iife.min.js'), type: 'text/javascript; charset=utf-8' },
  '/ui/uplot.css': { file: () => dependency('uplot/dist/uPlot.min.css'), type: 'text/css; charset=utf-8' },
};

/**
 * A status page that reads each of its files (about 60 KB in all) the first time it is asked
 * for, then keeps it: a gateway nobody looks at never reads them.
 */
export function lazyStatusPage(): (path: string) => PageAsset | undefined {
  const loaded = new Map<string, PageAsset>();
  return (path) => {
    const spec = Object.hasOwn(FILES, path) ? FILES[path] : undefined;
    if (spec === undefined) return undefined;
    let asset = loaded.get(path);
    if (asset === undefined) loaded.set(path, (asset = { type: spec.type, body: readFileSync(spec.file()) }));
    return asset;
  };
}

/**
 * Sent with every file of the page: scripts and styles only from the gateway, data only from
 * it, no framing. uPlot styles its elements through the DOM (`element.style`), which this allows.
 */
export const PAGE_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-cache',
};
