export declare const TURBOFAN_DEFERRED: unique symbol;
/** Holds TurboFan back when the command is `run` and node's command line says nothing of V8's compilers; true when it did. */
export declare function deferOptimizingCompiler(argv?: readonly string[], execArgv?: readonly string[], env?: NodeJS.ProcessEnv): boolean;
