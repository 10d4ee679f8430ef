import type { Logger } from 'pino';

/**
 * The logger a sink's reader logs with: the caller's when its bindings name the sink already (a
 * bridge gives each sink's reader one), else a child that names it. The reader's lines leave
 * `sink` out of their own fields, so that each line has the key once: pino writes a binding and a
 * field of the same name both, which strict JSON readers refuse and log shippers resolve
 * differently (the first, the last, or an error).
 */
export function sinkLogger(logger: Logger, sink: string): Logger {
  return Object.hasOwn(logger.bindings(), 'sink') ? logger : logger.child({ sink });
}
