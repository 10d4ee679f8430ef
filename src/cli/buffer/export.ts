import { once } from 'node:events';
import { createWriteStream, renameSync, rmSync } from 'node:fs';
import type { Writable } from 'node:stream';
import type { DeadLetter, StoredMessage } from '../../buffer/store.ts';
import { describeError } from '../../core/errors.ts';
import type { DataDirOptions } from '../load.ts';
import { base64 } from '../payload.ts';
import { CommandError, fail, requireBridge, withBuffer } from './open.ts';

export interface ExportOptions extends DataDirOptions {
  readonly format: string;
  readonly bridge?: string;
  readonly deadLetters?: boolean;
  readonly output?: string;
}

const PROGRESS_EVERY = 10_000;
const CHUNK_CHARS = 64 * 1024;

/**
 * Streams rows from one read snapshot, so memory stays flat whatever the buffer holds. The
 * snapshot keeps the gateway from checkpointing its WAL past it until the export ends.
 */
export async function exportCommand(options: ExportOptions): Promise<void> {
  if (options.format !== 'jsonl') {
    fail(`unknown export format '${options.format}' (the only one is jsonl)`);
    return;
  }
  await withBuffer(options, 'read', async (store, path) => {
    const { bridge } = options;
    if (bridge !== undefined) requireBridge(store, bridge, path);
    const what = (count: number) => (options.deadLetters === true ? `dead letter${count === 1 ? '' : 's'}` : `message${count === 1 ? '' : 's'}`);
    const lines =
      options.deadLetters === true
        ? mapRows(store.iterateDeadLetters(bridge), (d) => JSON.stringify(deadLetterJson(d)))
        : mapRows(store.iterateMessages(bridge), (m) => JSON.stringify(messageJson(m)));
    const tty = process.stderr.isTTY;
    const progress = (count: number) => {
      if (tty) process.stderr.write(`\rexported ${count} ${what(count)}...`);
    };
    const count = options.output === undefined ? await writeLines(process.stdout, 'standard output', lines, progress) : await writeFile(options.output, lines, progress);
    if (count === undefined) return;
    const where = options.output === undefined ? '' : ` to ${options.output}`;
    process.stderr.write(`${tty ? '\r\u001b[K' : ''}exported ${count} ${what(count)}${bridge === undefined ? '' : ` of bridge '${bridge}'`}${where}\n`);
  });
}

/**
 * Writes the lines to `<file>.partial` and renames it to `file` once complete: an export that
 * fails, or that Ctrl-C stops, leaves no file that looks like a whole export (its lines are
 * whole) and does not destroy an earlier one of that name. The partial file is removed then.
 */
async function writeFile(file: string, lines: Iterable<string>, progress: (count: number) => void): Promise<number | undefined> {
  const partial = `${file}.partial`;
  const out = createWriteStream(partial);
  try {
    await once(out, 'open');
  } catch (error) {
    throw new CommandError(`cannot write ${file}: ${describeError(error)}`);
  }
  const interrupted = (signal: NodeJS.Signals) => {
    out.destroy();
    rmSync(partial, { force: true });
    process.stderr.write(`${process.stderr.isTTY ? '\r\u001b[K' : ''}ferry: export stopped by ${signal}; ${file} was not written\n`);
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  try {
    const count = await writeLines(out, file, lines, progress);
    renameSync(partial, file);
    return count;
  } catch (error) {
    rmSync(partial, { force: true });
    throw error;
  } finally {
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
    out.destroy();
  }
}

function* mapRows<T>(rows: Iterable<T>, toLine: (row: T) => string): Generator<string> {
  for (const row of rows) yield toLine(row);
}

/**
 * Writes the lines in chunks, waiting whenever the stream asks to, and ends a file stream.
 * Resolves with how many were written, or undefined when the reader of standard output went
 * away (`| head`). A failing stream is a CommandError naming `target`.
 */
async function writeLines(out: Writable, target: string, lines: Iterable<string>, progress: (count: number) => void): Promise<number | undefined> {
  let failure: Error | undefined;
  out.on('error', (error) => (failure ??= error));
  const check = () => {
    if (failure === undefined) return;
    if (out === process.stdout && (failure as { code?: unknown }).code === 'EPIPE') return 'closed';
    throw new CommandError(`cannot write ${target}: ${describeError(failure)}`);
  };
  const write = async (chunk: string) => {
    if (failure === undefined && !out.write(chunk)) await once(out, 'drain').catch(() => undefined);
    return check();
  };
  let count = 0;
  let chunk = '';
  for (const line of lines) {
    chunk += `${line}\n`;
    count += 1;
    if (count % PROGRESS_EVERY === 0) progress(count);
    if (chunk.length >= CHUNK_CHARS) {
      if ((await write(chunk)) === 'closed') return undefined;
      chunk = '';
    }
  }
  if ((await write(chunk)) === 'closed') return undefined;
  if (out !== process.stdout) {
    out.end();
    await once(out, 'finish').catch(() => undefined);
    check();
  }
  return count;
}

function messageJson(m: StoredMessage) {
  const { envelope: e } = m;
  return {
    id: e.id,
    bridge: m.bridge,
    seq: m.seq,
    topic: e.topic,
    key: e.key ?? null,
    headers: e.headers,
    origin: e.origin,
    createdAt: new Date(e.timestamp).toISOString(),
    payload: base64(e.payload),
    payloadEncoding: 'base64',
  };
}

function deadLetterJson(d: DeadLetter) {
  return { ...messageJson(d), sink: d.sink, reason: d.reason, attempts: d.attempts, deadAt: new Date(d.deadAt).toISOString() };
}
