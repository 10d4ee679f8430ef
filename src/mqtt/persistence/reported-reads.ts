import type { Readable } from 'node:stream';
import { asError } from '../../core/errors.ts';

type OnFailure = ((error: Error) => void) | undefined;

/**
 * A read of the broker's state: what it throws goes to `onFailure` first (openBrokerState looks
 * for SQLITE_CORRUPT in it, as in the writes GroupCommit reports), then on to the caller as before.
 */
export function reportedRead<T>(onFailure: OnFailure, read: () => T): T {
  try {
    return read();
  } catch (error) {
    onFailure?.(asError(error));
    throw error;
  }
}

/** A stream of rows read from the state as it is consumed: the error it ends with goes to `onFailure` too. */
export function reportedStream(onFailure: OnFailure, open: () => Readable): Readable {
  const stream = reportedRead(onFailure, open);
  if (onFailure !== undefined) stream.on('error', onFailure);
  return stream;
}
