// `postinstall`: applies patches/ (security fixes backported into aedes, see the patch) to the
// dependencies wherever npm put them. In this checkout that is ./node_modules, as patch-package
// expects; installed into another project, Ferry's dependencies sit in that project's
// node_modules (or nested under node_modules/ferry), so each patch is renamed for where its
// package is and applied from the project's root. Fails the install when a patch does not apply:
// the embedded broker refuses to start on an unpatched aedes.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const require = createRequire(join(root, 'package.json'));
const patchPackage = join(dirname(require.resolve('patch-package/package.json')), 'index.js');
const marker = `${sep}node_modules${sep}`;
const appRoot = root.includes(marker) ? root.slice(0, root.indexOf(marker)) : root;

/** Where Node finds package `name` from Ferry's directory, as a node_modules path below the app's root. */
function installedAt(name) {
  for (let dir = root; ; dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', name);
    if (existsSync(join(candidate, 'package.json'))) return relative(appRoot, candidate);
    if (dirname(dir) === dir) return undefined;
  }
}

let patchDir = join(root, 'patches');
let cleanup = () => {};
if (appRoot !== root) {
  const renamed = mkdtempSync(join(tmpdir(), 'ferry-patches-'));
  cleanup = () => rmSync(renamed, { recursive: true, force: true });
  for (const file of readdirSync(patchDir).filter((f) => f.endsWith('.patch'))) {
    const name = file.slice(0, file.lastIndexOf('+')).replaceAll('+', '/');
    const at = installedAt(name);
    if (at === undefined) throw new Error(`ferry postinstall: ${name} is not installed; cannot apply ${file}`);
    // patch-package names a nested package by its node_modules path: a++b+1.0.0.patch is node_modules/a/node_modules/b.
    const prefix = at
      .split(sep)
      .filter((part) => part !== 'node_modules')
      .slice(0, -1);
    copyFileSync(join(patchDir, file), join(renamed, [...prefix, file].join('++')));
  }
  patchDir = renamed;
}
const run = spawnSync(process.execPath, [patchPackage, '--error-on-fail', '--patch-dir', relative(appRoot, patchDir)], { cwd: appRoot, stdio: 'inherit' });
cleanup();
process.exit(run.status ?? 1);
