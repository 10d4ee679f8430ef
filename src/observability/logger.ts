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
    bridge === undefined && !usePretty
      ? {}
      : {
          hooks: {
            streamWrite: (line: string) => {
              bridge?.line?.(line);
              return usePretty ? terminalSafe(line) : line;
            },
          },
        };
  const base = { level: options.level, ...(options.name === undefined ? {} : { name: options.name }), ...hooks };
  if (!usePretty) return pino(base, pino.destination({ fd: 1, sync: false }));
  // Loaded only for a terminal: it costs about 0.15 s of startup.
  const pretty = createRequire(import.meta.url)('pino-pretty') as typeof PinoPretty;
  return pino(base, pretty({ sync: true, colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' }));
}

/** Control characters (C0, DEL, C1) and the Unicode line and paragraph separators. */
const IN_MESSAGE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;
/** DEL and the C1 controls: JSON leaves them as they are, and a terminal may take U+009B as CSI. */
const C1 = /[\u007f-\u009f]/g;
const SHORT: Readonly<Record<string, string>> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };
const escaped = (c: string) => SHORT[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;

/**
 * A log line made safe for pino-pretty to print on a terminal. Messages and fields carry device
 * data (client ids, usernames may hold any character but NUL): pino-pretty prints a message's
 * newline as it is, which starts a forged line, and a field's C1 controls as they are. These are
 * written as escapes (`\n`, `\u009b`); a stack keeps its newlines, which pino-pretty indents.
 */
export function terminalSafe(line: string): string {
  const safe = JSON.parse(line, (key, value: unknown) => (typeof value !== 'string' ? value : value.replace(key === 'msg' ? IN_MESSAGE : C1, escaped)));
  return `${JSON.stringify(safe)}\n`;
}
