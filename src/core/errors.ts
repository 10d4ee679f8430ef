/**
 * Every error Ferry raises or wraps is a FerryError with a code from this closed list.
 * Callers decide by `code` (never by `instanceof` of a subclass) and read the context
 * fields to say what failed.
 */
export const ErrorCodes = [
  'CONFIG_INVALID',
  'CONFIG_NOT_FOUND',
  'CONFIG_PARSE',
  'PORT_IN_USE',
  'LISTEN_FAILED',
  'DELIVERY_SETTLED',
  'SINK_WRITE_FAILED',
  'SOURCE_FAILED',
  'STORAGE_FAILED',
  'UPSTREAM_UNAVAILABLE',
  'MESSAGE_REJECTED',
  // One message that no retry can write (a template renders an invalid Kafka topic for it), named
  // alone by its sink while the rest of its batch is written: dead-lettered without a search.
  'MESSAGE_INVALID',
  'SHUTDOWN',
  'INTERNAL',
] as const;

export type ErrorCode = (typeof ErrorCodes)[number];

export interface ErrorContext {
  /** Component kind and name, e.g. "kafka sink 'telemetry'". */
  readonly component?: string;
  readonly bridge?: string;
  readonly topic?: string;
  /** True when trying again later may succeed (upstream down), false when it never will. */
  readonly retryable?: boolean;
}

export class FerryError extends Error {
  override readonly name = 'FerryError';
  readonly code: ErrorCode;
  readonly component: string | undefined;
  readonly bridge: string | undefined;
  readonly topic: string | undefined;
  readonly retryable: boolean;

  constructor(code: ErrorCode, message: string, context: ErrorContext & { cause?: unknown } = {}) {
    super(message, context.cause === undefined ? undefined : { cause: context.cause });
    this.code = code;
    this.component = context.component;
    this.bridge = context.bridge;
    this.topic = context.topic;
    this.retryable = context.retryable ?? false;
  }
}

export function isFerryError(value: unknown, code?: ErrorCode): value is FerryError {
  return value instanceof FerryError && (code === undefined || value.code === code);
}

/** Wraps any thrown value, keeping it as the cause: "kafka sink 'x': produce failed: <cause>". */
export function wrapError(code: ErrorCode, message: string, cause: unknown, context: ErrorContext = {}): FerryError {
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new FerryError(code, `${message}: ${reason}`, { ...context, cause });
}

/** A message for logs and CLI output, without a stack. */
export function describeError(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}

/** `cause` itself when it is an Error, else an Error with its text (what a rejection or a throw may carry). */
export function asError(cause: unknown): Error {
  return cause instanceof Error ? cause : new Error(String(cause));
}
