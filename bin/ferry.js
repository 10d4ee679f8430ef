#!/usr/bin/env node
// Before anything native loads: an old Node gets a clear error, not a segmentation fault.
import module from 'node:module';
import { fileURLToPath } from 'node:url';
import { chooseEntry } from './entry.js';
import { nodeVersionProblem } from './node-version.js';
import { loadBuiltinsOfRun } from './builtins.js';
import { deferOptimizingCompiler } from './tiering.js';

const problem = nodeVersionProblem(process.versions.node);
if (problem !== undefined) {
  process.stderr.write(`ferry: ${problem}\n`);
  process.exit(1);
}
// The first use of import.meta loads a module of Node's: here, before the flags change.
const root = fileURLToPath(new URL('..', import.meta.url));
// Node's modules that `ferry run` loads, while V8 still takes their code cache: see bin/builtins.js.
await loadBuiltinsOfRun();
// TurboFan held back until `ferry run` has load: see bin/tiering.js.
deferOptimizingCompiler();
// V8's code cache of every module Ferry loads, kept on disk (Node's default place in the temp
// directory, or NODE_COMPILE_CACHE; NODE_DISABLE_COMPILE_CACHE=1 turns it off): later starts
// skip compiling (about 30% less time to accepting connections; see docs/benchmarks.md).
// Enabled after the flags changed: V8 takes a cache made under other flags for none of the
// modules, and Node names the directory in its default place by the flags' hash, so that
// `ferry run` and the other commands each keep their own instead of throwing the other's away.
module.enableCompileCache?.();
if (chooseEntry(root) === 'dist') {
  await import('../dist/app/cli/main.js');
} else {
  // The TypeScript sources, run without a build step: through Node's own type stripping where
  // it is on (Node >= 22.18, outside node_modules), else through tsx's loader.
  if (!process.features.typescript || import.meta.url.includes('/node_modules/')) {
    const { register } = await import('tsx/esm/api');
    register();
    globalThis[Symbol.for('ferry.tsx-registered')] = true;
  }
  await import('../src/cli/main.ts');
}
