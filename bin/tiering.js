// TurboFan, V8's optimizing compiler, held back while `ferry run` starts and until the gateway
// has load. What runs hot during a start runs once (module resolution, the config's parse and
// validation): TurboFan compiled about ten such functions on its background thread, and from
// its first compile on the process holds about 10 MB more (its code pages in node's binary and
// its working memory): an idle gateway of the embedded default at 69 against 80 MB, its start
// 50-60 ms of CPU cheaper (alternating starts, docs/benchmarks.md). `ferry run` turns it on
// again once the event loop is busy (src/runtime/compiler-tiering.ts), so the code that runs
// under load is optimized as before. Plain JavaScript, run by bin/ferry.js before the CLI loads.
import { setFlagsFromString } from 'node:v8';

/** Set on globalThis while TurboFan is held back; `ferry run` clears it when it turns it on. */
export const TURBOFAN_DEFERRED = Symbol.for('ferry.turbofan-deferred');

/** A choice about V8's compilers made on node's command line, which Ferry leaves alone. */
const COMPILER_FLAG = /^--(no-)?(turbofan|opt|jitless|max-opt)(=|$)/;

/**
 * Holds TurboFan back when the command is `run` and node's command line (or NODE_OPTIONS) says
 * nothing of V8's compilers. True when it did.
 */
export function deferOptimizingCompiler(argv = process.argv, execArgv = process.execArgv, env = process.env) {
  if (argv[2] !== 'run') return false;
  const given = [...execArgv, ...(env.NODE_OPTIONS ?? '').split(/\s+/)];
  if (given.some((arg) => COMPILER_FLAG.test(arg))) return false;
  setFlagsFromString('--no-turbofan');
  globalThis[TURBOFAN_DEFERRED] = true;
  return true;
}
