import { pino, type Logger, type LevelWithSilent } from 'pino';
import { createRequire } from 'node:module';
import type PinoPretty from 'pino-pretty';
import type { LogBridge } from './log-bridge.ts';

export interface LoggerOptions {
  readonly level: LevelWithSilent;
  /** 'auto' pretty-prints when standard output is a terminal. */
  readonly pretty: 'auto' | 'always' | 'never';
  readonly name?: string;
  /** Given when telemetry is configured: OTLP log export. */
  readonly bridge?: LogBridge;
}

/** pino JSON lines on stdout, or pretty lines in a terminal (synchronous, no worker thread). */
export function createLogger(options: LoggerOptions): Logger {
  const usePretty = options.pretty === 'always' || (options.pretty === 'auto' && process.stdout.isTTY === true);
  const { bridge } = options;
  const hooks =
    bridge === undefined
      ? {}
      : {
          hooks: {
            streamWrite: (line: string) => {
              bridge.line?.(line);
              return line;
            },
          },
        };
  const base = { level: options.level, ...(options.name === undefined ? {} : { name: options.name }), ...hooks };
  if (!usePretty) return pino(base, pino.destination({ fd: 1, sync: false }));
  // Loaded only for a terminal: it costs about 0.15 s of startup.
  const pretty = createRequire(import.meta.url)('pino-pretty') as typeof PinoPretty;
  return pino(base, pretty({ sync: true, colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' }));
}
