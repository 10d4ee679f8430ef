import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { describeError } from '../core/errors.ts';
import { HistoryReader, historyPath, type HistoryRow } from '../sqlite/history-store.ts';
import { isCorruption, tryMarkForCheck } from '../sqlite/open-checked.ts';
import { fail } from './buffer/open.ts';
import { resolveDataDir } from './load.ts';
import { jsonLine, lineText, payloadForLine, payloadText } from './payload.ts';

/** Messages `--follow` reads at a time. */
const FOLLOW_ROUND = 10_000;

export interface HistoryOptions {
  readonly config: string;
  readonly dataDir?: string;
  readonly bridge?: string;
  readonly topic?: string;
  readonly limit: number;
  readonly follow?: boolean;
  readonly json?: boolean;
}

export async function historyCommand(options: HistoryOptions): Promise<void> {
  const dataDir = resolveDataDir(options);
  if (dataDir === undefined) {
    process.exitCode = 1;
    return;
  }
  const path = historyPath(dataDir);
  if (!existsSync(path)) {
    fail(`no history yet at ${path} (start the gateway with \`ferry run\` and publish to devices/<id>/telemetry/...)`);
    return;
  }
  const query = {
    limit: options.limit,
    ...(options.bridge === undefined ? {} : { bridge: options.bridge }),
    ...(options.topic === undefined ? {} : { topicPrefix: options.topic }),
  };
  let last = 0;
  const print = (rows: HistoryRow[]) => {
    for (const row of rows) {
      process.stdout.write(`${options.json === true ? jsonLine(toJson(row)) : toLine(row)}\n`);
      last = row.seq;
    }
  };
  let reader: HistoryReader | undefined;
  try {
    reader = new HistoryReader(dataDir);
    print(reader.latest(query));
    while (options.follow === true) {
      await sleep(500);
      // The oldest after the last printed, as many rounds as it takes: more than a round's
      // worth may have come in half a second, and none may be skipped.
      for (let full = true; full; ) {
        const rows = reader.latest({ ...query, afterSeq: last, limit: FOLLOW_ROUND, oldest: true });
        print(rows);
        full = rows.length === FOLLOW_ROUND;
      }
    }
  } catch (error) {
    fail(`${path}: ${describeError(error)}${isCorruption(error) ? corrupt(path, error) : ''}`);
  } finally {
    reader?.close();
  }
}

/**
 * A history this command found corrupt is marked as a write of the gateway's would mark it: the
 * gateway checks it, and moves it aside if the check agrees, at its next start or once its own
 * write fails on it.
 */
function corrupt(path: string, error: unknown): string {
  const notMarked = tryMarkForCheck(path, `found corrupt by ferry history: ${describeError(error)}`);
  if (notMarked !== undefined) return `\nthe history is corrupt and could not be marked for a check (${notMarked.message}): stop the gateway and move ${path} aside`;
  return '\nthe history is corrupt: marked it for a check; the gateway checks it, and moves it aside (history.db.corrupt-<time>) if the check agrees, at its next start or when a write to it fails';
}

/** One line per message: the topic, client id and payload come from devices, so their control characters are escaped. */
function toLine(row: HistoryRow): string {
  return `${new Date(row.receivedAt).toISOString()}  ${lineText(row.clientId ?? '-')}  ${lineText(row.topic)}  ${payloadForLine(row.payload)}`;
}

function toJson(row: HistoryRow) {
  const { text, encoding } = payloadText(row.payload);
  return { id: row.id, bridge: row.bridge, topic: row.topic, clientId: row.clientId, qos: row.qos, receivedAt: new Date(row.receivedAt).toISOString(), payload: text, encoding };
}
