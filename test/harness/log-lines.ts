import { Writable } from 'node:stream';
import pino, { type LevelWithSilent, type Logger } from 'pino';

/** A pino logger (level debug unless told) whose JSON lines are kept in `lines`, as written. */
export function capturedLogger(level: LevelWithSilent = 'debug'): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  return { logger: loggerInto(level, (line) => lines.push(line)), lines };
}

/** What a test reads of a pino log line: its level (30 info, 40 warn, 50 error) and message. */
export interface LoggedLine {
  readonly level: number;
  readonly msg: string;
}

/** A pino logger at `level` whose lines are kept in `entries`, each parsed as it is written (as `Entry`, when given). */
export function capturedEntries<Entry = Record<string, unknown>>(level: LevelWithSilent): { logger: Logger; entries: Entry[] } {
  const entries: Entry[] = [];
  return { logger: loggerInto(level, (line) => entries.push(JSON.parse(line) as Entry)), entries };
}

function loggerInto(level: LevelWithSilent, keep: (line: string) => void): Logger {
  return pino(
    { level },
    new Writable({
      write(chunk: Buffer, _encoding, done) {
        keep(chunk.toString());
        done();
      },
    }),
  );
}

/**
 * The top-level keys of a JSON object line that appear more than once: JSON.parse keeps the last
 * silently, strict readers refuse the line, log shippers keep the first or the last.
 */
export function duplicateKeys(line: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === '{' || c === '[') depth++;
    else if (c === '}' || c === ']') depth--;
    else if (c === '"') {
      let end = i + 1;
      while (line[end] !== '"') end += line[end] === '\\' ? 2 : 1;
      if (depth === 1 && line[end + 1] === ':') keys.push(line.slice(i + 1, end));
      i = end;
    }
  }
  return keys.filter((key, i) => keys.indexOf(key) !== i);
}
