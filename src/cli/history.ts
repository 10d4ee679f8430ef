import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { HistoryReader, historyPath, type HistoryRow } from '../sqlite/history-store.ts';
import { resolveDataDir } from './load.ts';
import { jsonLine, lineText, payloadForLine, payloadText } from './payload.ts';

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
  if (!existsSync(historyPath(dataDir))) {
    process.stderr.write(`ferry: no history yet at ${historyPath(dataDir)} (start the gateway with \`ferry run\` and publish to devices/<id>/telemetry/...)\n`);
    process.exitCode = 1;
    return;
  }
  const reader = new HistoryReader(dataDir);
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
  try {
    print(reader.latest(query));
    while (options.follow === true) {
      await sleep(500);
      print(reader.latest({ ...query, afterSeq: last, limit: 10_000 }));
    }
  } finally {
    reader.close();
  }
}

/** One line per message: the topic, client id and payload come from devices, so their control characters are escaped. */
function toLine(row: HistoryRow): string {
  return `${new Date(row.receivedAt).toISOString()}  ${lineText(row.clientId ?? '-')}  ${lineText(row.topic)}  ${payloadForLine(row.payload)}`;
}

function toJson(row: HistoryRow) {
  const { text, encoding } = payloadText(row.payload);
  return { id: row.id, bridge: row.bridge, topic: row.topic, clientId: row.clientId, qos: row.qos, receivedAt: new Date(row.receivedAt).toISOString(), payload: text, encoding };
}
