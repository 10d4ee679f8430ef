// Node's own modules that `ferry run` loads, loaded before it changes any V8 flag. Node ships
// V8's code cache of its built-in modules in its binary, and V8 takes a code cache only when
// the flags are those it was made with: after any `v8.setFlagsFromString` (TurboFan held back,
// bin/tiering.js; the heap's growth and the young generation's size, src/cli/run.ts), each
// built-in module loaded later is compiled from its source, about 2.5 times the time (these
// modules: 15 against 42 ms in a bare `node`). The same happens with any V8 flag on node's
// command line or in NODE_OPTIONS (V8 ignores memory flags in this check since late 2025, in
// versions Node 22 does not have). Every one of them is loaded by a start of the embedded
// default anyway: loaded here first, a start took about 50 ms less, in time and in CPU
// (docs/benchmarks.md). test/e2e/code-cache.test.ts checks that a start loads no built-in
// module late. Plain JavaScript, run by bin/ferry.js before the CLI loads.

/**
 * Built-in modules a start of `ferry run` imports as ES modules. Node makes a built-in's ES module
 * facade by reading every export, and some exports load more modules when read (net's BlockList,
 * crypto's webcrypto, util's parseArgs, process's report): those are compiled then.
 */
const IMPORTED = ['process', 'util', 'net', 'crypto', 'os', 'perf_hooks', 'child_process', 'zlib', 'readline', 'vm', 'fs/promises', 'timers/promises'];

/**
 * The others a start loads, required by packages or taken through process.getBuiltinModule:
 * node:http so, whose ES module facade would load undici.
 */
const REQUIRED = ['dgram', 'worker_threads', 'readline/promises', 'assert', 'http', 'dns', 'cluster', 'tty'];

/** Loads the built-in modules a start of `ferry run` loads, when the command is `run`. True when it did. */
export async function loadBuiltinsOfRun(argv = process.argv) {
  if (argv[2] !== 'run') return false;
  for (const name of REQUIRED) process.getBuiltinModule(name);
  await Promise.all(IMPORTED.map((name) => import(`node:${name}`)));
  // A getter that loads Node's navigator module; packages read it to tell a browser from Node.
  void globalThis.navigator;
  return true;
}
