// Issue 11 (idle memory): TurboFan held back while `ferry run` starts and until the gateway has
// load. V8's own view of a function (%GetOptimizationStatus, in a child process started with
// --allow-natives-syntax) shows that the flags do what they are meant to.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { deferOptimizingCompiler } from '../../bin/tiering.js';
import { REPO_ROOT } from '../harness/ferry-process.ts';

test("TurboFan is held back only for `ferry run`, and never against a choice on node's command line", () => {
  // None of these sets a flag: each returns before (the true case runs in a child below).
  assert.equal(deferOptimizingCompiler(['node', 'ferry', 'migrate', 'up'], [], {}), false);
  assert.equal(deferOptimizingCompiler(['node', 'ferry'], [], {}), false);
  for (const flag of ['--no-opt', '--turbofan', '--no-turbofan', '--jitless', '--max-opt=2']) {
    assert.equal(deferOptimizingCompiler(['node', 'ferry', 'run'], [flag], {}), false, flag);
    assert.equal(deferOptimizingCompiler(['node', 'ferry', 'run'], [], { NODE_OPTIONS: `--import x.mjs ${flag}` }), false, `NODE_OPTIONS ${flag}`);
  }
  assert.equal((globalThis as Record<symbol, unknown>)[Symbol.for('ferry.turbofan-deferred')], undefined);
});

// %GetOptimizationStatus bit 6: the function runs TurboFan's code.
const CHILD = `
import { deferOptimizingCompiler } from './bin/tiering.js';
import { optimizingCompilerDeferred, resumeOptimizingCompilerUnderLoad } from './src/runtime/compiler-tiering.ts';
const TURBOFANNED = 1 << 6;
function hot(n) { let s = 0; for (let i = 0; i < n; i++) s += (i * 7) % 13; return s; }
const optimized = async () => {
  for (let round = 0; round < 60; round++) {
    for (let k = 0; k < 50; k++) hot(10_000);
    if (%GetOptimizationStatus(hot) & TURBOFANNED) return true;
    await new Promise((resolve) => setTimeout(resolve, 20)); // the compile runs on another thread
  }
  return false;
};
const steps = {};
steps.deferred = deferOptimizingCompiler(['node', 'ferry', 'run'], [], {});
steps.optimizedWhileHeld = await optimized();
const watch = resumeOptimizingCompilerUnderLoad({ checkMs: 50 });
await new Promise((resolve) => setTimeout(resolve, 400));
steps.heldWhileIdle = optimizingCompilerDeferred();
const spin = (ms) => { const until = performance.now() + ms; while (performance.now() < until); };
spin(150); // one long piece of work is not load
await new Promise((resolve) => setTimeout(resolve, 150));
steps.heldAfterOneBlock = optimizingCompilerDeferred();
const loadUntil = performance.now() + 800; // from an idle spell TurboFan is back within about two idle periods
while (performance.now() < loadUntil) { // load: the event loop busy, period after period
  spin(30);
  await new Promise((resolve) => setImmediate(resolve));
}
await new Promise((resolve) => setTimeout(resolve, 150));
steps.heldAfterLoad = optimizingCompilerDeferred();
steps.optimizedAfter = await optimized();
watch.stop();
console.log(JSON.stringify(steps));
`;

test('held back, a hot function stays unoptimized; it is optimized once the event loop has load, not while it idles or after one long piece of work', () => {
  const run = spawnSync(process.execPath, ['--allow-natives-syntax', '--import', 'tsx', '--input-type=module', '-e', CHILD], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
  });
  assert.equal(run.status, 0, run.stderr);
  assert.deepEqual(JSON.parse(run.stdout), { deferred: true, optimizedWhileHeld: false, heldWhileIdle: true, heldAfterOneBlock: true, heldAfterLoad: false, optimizedAfter: true });
});
