export declare const MINIMUM: readonly [number, number];
/** Undefined when `version` (as in process.versions.node) is new enough, else what to tell the user. */
export declare function nodeVersionProblem(version: string): string | undefined;
