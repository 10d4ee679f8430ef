import { FerryError, describeError } from '../core/errors.ts';
import { describeValue } from './output-router.ts';

// How a TypeScript bridge classes its handler's failures: the bridge code's mistakes are
// CONFIG_INVALID; an error the handler throws is its own (a message it fails on is dead-lettered
// as MESSAGE_REJECTED, culpritError), never Ferry's INTERNAL one.

/** handle() returned something other than an Observable of outputs: the bridge code's mistake. */
export function notObservable(bridge: string, returned: unknown): FerryError {
  return new FerryError('CONFIG_INVALID', `bridge '${bridge}': handle() returned ${describeValue(returned)}, not an Observable of outputs`, { bridge });
}

/** The handler's observable completed while its input goes on: the bridge code's mistake. */
export function completedWhileRunning(bridge: string): FerryError {
  return new FerryError('CONFIG_INVALID', `bridge '${bridge}': the handler's observable completed while the bridge runs; it must go on as long as its input does`, { bridge });
}

/**
 * What the messages a handler held are nacked with when it fails while the bridge stops: the
 * handler's error, with its code when it has one (CONFIG_INVALID for an output built wrongly),
 * else MESSAGE_REJECTED as for an error it throws on a message. Retryable whatever it is: none is
 * pinned on a message now, so all of them stay buffered and the next start hands them again.
 */
export function failedWhileStopping(bridge: string, error: unknown): FerryError {
  const code = error instanceof FerryError ? error.code : 'MESSAGE_REJECTED';
  return new FerryError(code, `the handler of bridge '${bridge}' failed while stopping: ${describeError(error)}`, { bridge, retryable: true, cause: error });
}
