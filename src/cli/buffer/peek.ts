import type { BufferStore, DeadLetter, StoredMessage } from '../../buffer/store.ts';
import type { DataDirOptions } from '../load.ts';
import { jsonLine, lineText, payloadForLine, payloadText } from '../payload.ts';
import { CommandError, requireBridge, withBuffer } from './open.ts';

export interface PeekOptions extends DataDirOptions {
  readonly bridge?: string;
  readonly sink?: string;
  readonly limit: number;
  readonly json?: boolean;
  /** The dead letters instead: messages a sink gave up on, or the bridge refused at ingress. */
  readonly dead?: boolean;
}

export function peekCommand(options: PeekOptions): Promise<void> {
  return withBuffer(options, 'read', (store, path) => {
    const { bridge, sink, limit } = options;
    if (bridge !== undefined) requireBridge(store, bridge, path);
    if (options.dead === true) {
      for (const letter of deadLetters(store, bridge, sink, limit)) {
        process.stdout.write(`${options.json === true ? jsonLine(deadJson(letter)) : deadLine(letter, bridge === undefined)}\n`);
      }
      return;
    }
    let messages: StoredMessage[];
    let bridges = 1;
    if (sink !== undefined) messages = sinkNext(store, findBridge(store, path, bridge, sink), sink, limit);
    else {
      const names = bridge === undefined ? store.bridges() : [bridge];
      bridges = names.length;
      // seq orders the whole log, so the messages of several bridges merge by it.
      messages = names
        .flatMap((b) => store.read(b, 0, limit))
        .sort((a, b) => a.seq - b.seq)
        .slice(0, limit);
    }
    for (const message of messages) process.stdout.write(`${options.json === true ? jsonLine(toJson(message)) : toLine(message, bridges > 1)}\n`);
  });
}

/** The bridge of the sink: the one given, or the only one that has a sink of that name. */
function findBridge(store: BufferStore, path: string, bridge: string | undefined, sink: string): string {
  const cursors = store.cursors(bridge).filter((c) => c.sink === sink);
  const [cursor] = cursors;
  if (cursor === undefined) {
    const sinks = store.cursors(bridge).map((c) => (bridge === undefined ? `${c.bridge}/${c.sink}` : c.sink));
    throw new CommandError(`no sink '${sink}' ${bridge === undefined ? `in ${path}` : `in bridge '${bridge}'`} (sinks: ${sinks.join(', ') || 'none'})`);
  }
  if (cursors.length > 1) throw new CommandError(`sink '${sink}' is in several bridges (${cursors.map((c) => c.bridge).join(', ')}): pass --bridge NAME`);
  return cursor.bridge;
}

/**
 * What the sink has not confirmed, in the order it is handed over: from its cursor; or,
 * while it replays live-first, the live part first and then the backlog (the reader
 * interleaves the backlog at its rate, so this order is the one it tends to).
 */
function sinkNext(store: BufferStore, bridge: string, sink: string, limit: number): StoredMessage[] {
  const { seq, liveMark, liveSeq } = store.cursorState(bridge, sink);
  if (liveMark === null || liveSeq === null) return store.read(bridge, seq, limit);
  const live = store.read(bridge, liveSeq, limit);
  const backlog = store.read(bridge, seq, limit - live.length).filter((m) => m.seq <= liveMark);
  return [...live, ...backlog];
}

function toLine(message: StoredMessage, withBridge: boolean): string {
  const { envelope: e } = message;
  const fields = [
    String(message.seq),
    new Date(e.timestamp).toISOString(),
    ...(withBridge ? [message.bridge] : []),
    lineText(e.origin.clientId ?? '-'),
    lineText(e.topic),
    payloadForLine(e.payload),
  ];
  return fields.join('  ');
}

function toJson(message: StoredMessage) {
  const { envelope: e } = message;
  const { text, encoding } = payloadText(e.payload);
  return {
    seq: message.seq,
    bridge: message.bridge,
    id: e.id,
    createdAt: new Date(e.timestamp).toISOString(),
    clientId: e.origin.clientId ?? null,
    topic: e.topic,
    payload: text,
    payloadEncoding: encoding,
  };
}

/** The oldest `limit` dead letters (of a bridge, of one sink or ingress part, or of all), in the order they were recorded. */
function deadLetters(store: BufferStore, bridge: string | undefined, sink: string | undefined, limit: number): DeadLetter[] {
  const out: DeadLetter[] = [];
  for (const letter of store.iterateDeadLetters(bridge)) {
    if (sink !== undefined && letter.sink !== sink) continue;
    out.push(letter);
    if (out.length === limit) break;
  }
  return out;
}

function deadLine(letter: DeadLetter, withBridge: boolean): string {
  const { envelope: e } = letter;
  const fields = [
    String(letter.dlSeq),
    new Date(letter.deadAt).toISOString(),
    ...(withBridge ? [letter.bridge] : []),
    letter.sink,
    lineText(e.origin.clientId ?? '-'),
    lineText(e.topic),
    lineText(letter.reason),
    payloadForLine(e.payload),
  ];
  return fields.join('  ');
}

function deadJson(letter: DeadLetter) {
  return { ...toJson(letter), deadLetter: letter.dlSeq, sink: letter.sink, reason: letter.reason, attempts: letter.attempts, deadAt: new Date(letter.deadAt).toISOString() };
}
