import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * The directory of Ferry's package.json, as a file URL ending in '/'. Found by walking up from
 * this module, which sits in src/ (the sources), dist/ (the compiled library) or a chunk of the
 * bundled CLI (dist/app/chunks/), so that the package's own files are found whichever runs.
 */
export const PACKAGE_ROOT: URL = findPackageRoot(new URL('.', import.meta.url));

/** Whether the running build is the TypeScript sources (src/), not the compiled library or the bundled CLI. */
export const FROM_SOURCES: boolean = import.meta.url.endsWith('.ts');

function findPackageRoot(start: URL): URL {
  for (let dir = start; ; dir = new URL('..', dir)) {
    if (existsSync(new URL('package.json', dir))) return dir;
    if (new URL('..', dir).href === dir.href) throw new Error(`no package.json above ${fileURLToPath(start)}: Ferry's installation is incomplete`);
  }
}
