// `npm run build` (and `prepare`, so that `npm install` from a git checkout builds too):
// compiles src/ to JavaScript and declarations in dist/ with the TypeScript compiler (the
// library that `import 'ferry'` loads), copies the files that are not TypeScript (the status
// page), bundles the CLI into dist/app/ (what bin/ferry.js runs; see bundleCli), and stamps
// the build last, so that bin/ferry.js runs dist/ only after a build that finished (see
// bin/entry.js).
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { build } from 'esbuild';
import { BUNDLED_MODULES, entryPoints } from '../src/config/bridge-resolve.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const dist = join(root, 'dist');
/** What characters outside ASCII in the bundle's comments become (asciiComments); others become '?'. */
const ASCII_LOOKALIKES: Record<string, string> = {
  '\u2014': '-',
  '\u2013': '-',
  '\u2192': '->',
  '\u2190': '<-',
  '\u00b5': 'u',
  '\u2018': "'",
  '\u2019': "'",
  '\u201c': '"',
  '\u201d': '"',
  '\u2026': '...',
  '\u00d7': 'x',
  '\u2264': '<=',
  '\u2265': '>=',
};

rmSync(dist, { recursive: true, force: true });
const tsc = join(dirname(createRequire(import.meta.url).resolve('typescript/package.json')), 'bin', 'tsc');
const compiled = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], { stdio: 'inherit' });
if (compiled.status !== 0) {
  process.stderr.write(`build: the TypeScript compiler failed (exit ${compiled.status ?? compiled.signal}); dist/ is incomplete and bin/ferry.js keeps running src/\n`);
  process.exit(1);
}
let assets = 0;
for (const entry of readdirSync(join(root, 'src'), { recursive: true, withFileTypes: true })) {
  if (!entry.isFile() || entry.name.endsWith('.ts')) continue;
  const from = join(entry.parentPath, entry.name);
  const to = join(dist, from.slice(join(root, 'src').length));
  mkdirSync(dirname(to), { recursive: true });
  cpSync(from, to);
  assets++;
}
await bundleCli();
writeFileSync(join(dist, '.build-stamp'), `${new Date().toISOString()}\n`);
process.stdout.write(`build: dist/ written (${assets} asset file(s) copied)\n`);

/**
 * The CLI in a few files: the compiled CLI, its public API (what TypeScript bridges import as
 * `ferry` and `ferry/<name>`) and rxjs, with the packages every start loads (rxjs and its
 * tslib helpers, zod, yaml, commander, uuid) inside, in chunks they share. A start otherwise spends
 * about a third of its CPU finding and reading ~400 small modules (rxjs alone is 223 CommonJS
 * files): see docs/benchmarks.md, "Startup and idle memory". Every other package stays in
 * node_modules: native ones, ones Ferry patches or reaches into (aedes, mqtt-packet, kafkajs),
 * and the heavy ones a start may never need (loaded when a bridge asks for them).
 */
async function bundleCli(): Promise<void> {
  const out = join(dist, 'app');
  const inside = new Set(['rxjs', 'tslib', 'zod', 'yaml', 'commander', 'uuid']);
  const rxjs = dirname(createRequire(import.meta.url).resolve('rxjs/package.json'));
  const library = [...entryPoints(pathToFileURL(join(root, 'package.json'))).values()];
  await build({
    entryPoints: {
      'cli/main': join(dist, 'cli/main.js'),
      index: join(dist, 'index.js'),
      ...Object.fromEntries(library.map((module) => [module, join(dist, `${module}.js`)])),
      ...Object.fromEntries(Object.entries(BUNDLED_MODULES).map(([specifier, file]) => [`vendor/${file.replace(/\.js$/, '')}`, `vendor:${specifier}`])),
    },
    outdir: out,
    // One directory below dist/app, as dist/config/ is below dist/: relative URLs of the
    // compiled modules (src/config/bridge-resolve.ts) stay right.
    chunkNames: 'chunks/[name]-[hash]',
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node22',
    logLevel: 'warning',
    // The CommonJS packages inside (commander, yaml) call require() for Node's builtins.
    banner: { js: "import { createRequire as __ferryCreateRequire } from 'node:module'; const require = __ferryCreateRequire(import.meta.url);" },
    plugins: [
      {
        name: 'ferry-packages',
        setup(bundler) {
          // rxjs' ES module build (Node's `node` condition picks its CommonJS one), so that the
          // bundle holds one copy that bridges share: src/config/bridge-resolve.ts.
          bundler.onResolve({ filter: /^vendor:/ }, (args) => ({ path: args.path.slice('vendor:'.length), namespace: 'vendor' }));
          bundler.onLoad({ filter: /.*/, namespace: 'vendor' }, (args) => ({ contents: `export * from '${args.path}';\n`, resolveDir: root }));
          // zod's namespace object re-exports every one of its ~50 locales (about 360 KB of the
          // bundle); Ferry's messages are English, the one locale zod itself sets by default.
          bundler.onResolve({ filter: /^\.\.\/locales\/index\.js$/ }, (args) =>
            /[\\/]zod[\\/]v4[\\/](classic[\\/]external|core[\\/]index)\.js$/.test(args.importer)
              ? { path: join(dirname(args.importer), '../locales/en.js'), namespace: 'zod-locales' }
              : undefined,
          );
          bundler.onLoad({ filter: /.*/, namespace: 'zod-locales' }, (args) => ({ contents: `export { default as en } from ${JSON.stringify(args.path)};\n`, resolveDir: root }));
          bundler.onResolve({ filter: /^rxjs(\/operators)?$/ }, (args) => ({ path: join(rxjs, 'dist/esm', args.path === 'rxjs' ? '' : 'operators', 'index.js') }));
          bundler.onResolve({ filter: /^[^./]/ }, (args) => {
            const name = args.path.startsWith('@') ? args.path.split('/').slice(0, 2).join('/') : (args.path.split('/')[0] as string);
            return inside.has(name) ? undefined : { external: true };
          });
        },
      },
    ],
  });
  for (const entry of readdirSync(out, { recursive: true, withFileTypes: true })) {
    if (entry.isFile() && entry.name.endsWith('.js')) asciiComments(join(entry.parentPath, entry.name));
  }
}

/**
 * V8 keeps each module's source for as long as the process runs, one byte a character when it
 * is all Latin-1 and two otherwise: a single dash in a comment made zod's 391 KB chunk take
 * 782 KB of heap. esbuild writes strings, templates, regular expressions and names in ASCII
 * (its `charset` default) but keeps comments as they are, so the characters left outside ASCII
 * are in comments: they become ASCII look-alikes here. One found outside a comment line stops
 * the build, rather than change what the code does.
 */
function asciiComments(file: string): void {
  const text = readFileSync(file, 'utf8');
  if (!/[^\x00-\x7f]/.test(text)) return;
  const lines = text.split('\n').map((line, index) => {
    if (!/[^\x00-\x7f]/.test(line)) return line;
    if (!/^\s*(\/\/|\/\*|\*)/.test(line)) {
      throw new Error(`build: ${file}:${index + 1} has a character outside ASCII outside a comment line; the bundle must be ASCII (esbuild's charset: ascii)`);
    }
    return line.replace(/[^\x00-\x7f]/g, (c) => ASCII_LOOKALIKES[c] ?? '?');
  });
  writeFileSync(file, lines.join('\n'));
}
