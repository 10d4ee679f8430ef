import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { ferryRoot } from './bridge-resolve.ts';
import type { ConfigIssue } from './issues.ts';

export type TypecheckResult = { readonly checked: true; readonly issues: readonly ConfigIssue[] } | { readonly checked: false; readonly reason: string };

/** How long a type check may take before it is given up (with a note, not an error). */
const TIMEOUT_MS = 120_000;

/**
 * Type-checks TypeScript bridges against Ferry's own types with the TypeScript compiler
 * installed alongside Ferry (issue 18: a misspelled sink option, or a type imported as a
 * value, is an error at its line before the gateway runs). `ferry` and Ferry's dependencies
 * resolve from Ferry's installation, wherever the bridges are. Reports only problems in the
 * bridges themselves; `checked: false` with the reason when no compiler is installed.
 */
export function typecheckBridges(modules: readonly string[], display: (path: string) => string): TypecheckResult {
  if (modules.length === 0) return { checked: true, issues: [] };
  const root = ferryRoot();
  let tsc: string;
  try {
    tsc = join(dirname(createRequire(join(root, 'package.json')).resolve('typescript/package.json')), 'bin', 'tsc');
  } catch {
    return { checked: false, reason: 'TypeScript is not installed with Ferry (npm install typescript)' };
  }
  const dir = mkdtempSync(join(tmpdir(), 'ferry-typecheck-'));
  try {
    const files = modules.map((m) => resolve(m));
    const types = (name: string) => join(root, 'node_modules', name);
    // A checkout has the sources; an installed package only the compiled declarations.
    const sources = existsSync(join(root, 'src', 'index.ts'));
    const api = sources ? join(root, 'src', 'index.ts') : join(root, 'dist', 'index.d.ts');
    const subpaths = sources ? join(root, 'src', 'lib', '*.ts') : join(root, 'dist', 'lib', '*.d.ts');
    writeFileSync(
      join(dir, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'es2023',
          lib: ['es2023'],
          // Bridges are ES modules to Node wherever they are (it detects their syntax), with or
          // without a package.json saying so: `preserve` checks them that way too.
          module: 'preserve',
          moduleResolution: 'bundler',
          strict: true,
          verbatimModuleSyntax: true,
          allowImportingTsExtensions: true,
          isolatedModules: true,
          skipLibCheck: true,
          noEmit: true,
          types: ['node'],
          typeRoots: [types('@types')],
          paths: {
            ferry: [api],
            'ferry/*': [subpaths],
            rxjs: [types('rxjs/dist/types/index.d.ts')],
            'rxjs/*': [types('rxjs/dist/types/*')],
          },
        },
        files,
      }),
    );
    // In `dir`: tsc names each file relative to its working directory, read back against `dir`.
    const run = spawnSync(process.execPath, [tsc, '-p', join(dir, 'tsconfig.json'), '--pretty', 'false'], { cwd: dir, encoding: 'utf8', timeout: TIMEOUT_MS });
    if (run.error !== undefined) return { checked: false, reason: `the TypeScript compiler did not run: ${run.error.message}` };
    const wanted = new Set(files);
    const issues: ConfigIssue[] = [];
    for (const line of `${run.stdout}\n${run.stderr}`.split('\n')) {
      const match = /^(.+?)\((\d+),(\d+)\): error (TS\d+): (.*)$/.exec(line.trim());
      if (match === null) continue;
      const file = resolve(dir, match[1] as string);
      if (!wanted.has(file)) continue;
      issues.push({ file: display(file), line: Number(match[2]), column: Number(match[3]), path: '', message: `${match[5]} (${match[4]})` });
    }
    if (run.status !== 0 && issues.length === 0 && !/error TS/.test(run.stdout)) {
      return { checked: false, reason: `the TypeScript compiler failed: ${(run.stderr || run.stdout).trim().split('\n')[0] ?? `exit ${run.status}`}` };
    }
    return { checked: true, issues };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
