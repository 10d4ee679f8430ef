export declare const BUILD_STAMP: string;
/** 'dist' or 'src': which build of the CLI to run for the package at `root`. */
export declare function chooseEntry(root: string, env?: NodeJS.ProcessEnv): 'dist' | 'src';
