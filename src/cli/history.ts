import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { HistoryReader, historyPath, type HistoryRow } from '../sqlite/history-store.ts';
import { loadForCommand } from './load.ts';

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
  let dataDir: string;
  if (options.dataDir !== undefined) dataDir = resolve(options.dataDir);
  else {
    const config = loadForCommand(options.config);
    if (config === undefined) {
      process.exitCode = 1;
      return;
    }
    dataDir = config.dataDirPath;
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
      process.stdout.write(`${options.json === true ? JSON.stringify(toJson(row)) : toLine(row)}\n`);
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

function payloadText(payload: Buffer): { text: string; encoding: 'utf8' | 'base64' } {
  const text = payload.toString('utf8');
  const printable = !/[\u0000-\u0008\u000e-\u001f\ufffd]/.test(text);
  return printable ? { text, encoding: 'utf8' } : { text: payload.toString('base64'), encoding: 'base64' };
}

function toLine(row: HistoryRow): string {
  const { text, encoding } = payloadText(row.payload);
  const time = new Date(row.receivedAt).toISOString();
  return `${time}  ${row.clientId ?? '-'}  ${row.topic}  ${encoding === 'utf8' ? text : `base64:${text}`}`;
}

function toJson(row: HistoryRow) {
  const { text, encoding } = payloadText(row.payload);
  return { id: row.id, bridge: row.bridge, topic: row.topic, clientId: row.clientId, qos: row.qos, receivedAt: new Date(row.receivedAt).toISOString(), payload: text, encoding };
}
