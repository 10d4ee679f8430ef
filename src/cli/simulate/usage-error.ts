/** A problem with what the user asked for: printed as is (no stack), exit code 1. */
export class UsageError extends Error {}
