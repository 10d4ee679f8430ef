import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { describeError } from '../core/errors.ts';
import { invalidFilterReason } from '../core/topic.ts';
import { type HistoryQuery, HistoryReader, historyPath, type HistoryRow } from '../sqlite/history-store.ts';
import { isCorruption, tryMarkForCheck } from '../sqlite/open-checked.ts';
import { fail, notFerrys } from './buffer/open.ts';
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
  const foreign = notAHistory(path);
  if (foreign !== undefined) {
    fail(foreign);
    return;
  }
  const topic = topicQuery(options.topic);
  if (topic === undefined) return;
  const query = { limit: options.limit, ...(options.bridge === undefined ? {} : { bridge: options.bridge }), ...topic };
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
    if (options.bridge !== undefined && !knownBridge(reader, options.bridge, path, options.follow === true)) return;
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
 * Why the SQLite file at `path` is not a Ferry history (an empty database, or another program's),
 * or undefined: such a file failed on its first query with `no such table: history_floors`. A
 * history has the packs' tables, or the table of a row a message that earlier versions kept
 * (read as it is).
 */
function notAHistory(path: string): string | undefined {
  return notFerrys(
    path,
    'a Ferry history database',
    (tables) => tables.includes('history') || (tables.includes('history_packs') && tables.includes('history_floors')),
    'a bridge with a `history` sink writes it there',
  );
}

/**
 * `--topic`: an MQTT filter when it has a wildcard level (`devices/+/telemetry/#`, as `ferry
 * retained list` takes), else a prefix (`devices/sensor-1/`). Undefined, with the reason
 * printed and exit code 1, for an invalid filter.
 */
function topicQuery(topic: string | undefined): Pick<HistoryQuery, 'topicPrefix' | 'topicFilter'> | undefined {
  if (topic === undefined) return {};
  if (!topic.includes('+') && !topic.includes('#')) return { topicPrefix: topic };
  const reason = invalidFilterReason(topic);
  if (reason === undefined) return { topicFilter: topic };
  fail(`invalid --topic '${lineText(topic)}': ${reason} (--topic takes a topic prefix, or an MQTT filter with + and #)`);
  return undefined;
}

/**
 * Whether the history has messages of the bridge. A name it has none of is most likely a typo
 * (it printed nothing, exit code 0): said with the names it has, exit code 1. Under --follow the
 * bridge may be new and write its first message soon: it is said, and the command follows on.
 */
function knownBridge(reader: HistoryReader, bridge: string, path: string, follow: boolean): boolean {
  const bridges = reader.bridges();
  if (bridges.includes(bridge)) return true;
  const there = bridges.length === 0 ? 'it has none' : `it has ${bridges.map(lineText).join(', ')}`;
  if (!follow) {
    fail(`no bridge '${lineText(bridge)}' in ${path} (${there})`);
    return false;
  }
  process.stderr.write(`ferry: no bridge '${lineText(bridge)}' in ${path} yet (${there}); waiting for its messages\n`);
  return true;
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
