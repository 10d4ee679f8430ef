import { invalidFilterReason } from '../../core/topic.ts';
import type { RetainedEntry } from '../../mqtt/persistence/state-file.ts';
import { formatBytes } from '../buffer/format.ts';
import { fail } from '../buffer/open.ts';
import type { DataDirOptions } from '../load.ts';
import { jsonLine, lineText, payloadForLine, payloadText } from '../payload.ts';
import { when, withBrokerState } from './open.ts';

export interface RetainedListOptions extends DataDirOptions {
  readonly topic?: string;
  readonly limit: number;
  readonly json?: boolean;
}

export interface RetainedPurgeOptions extends DataDirOptions {
  readonly yes?: boolean;
  readonly json?: boolean;
}

/** `ferry retained list [--topic FILTER]`: the retained messages, in topic order. */
export function listRetainedCommand(options: RetainedListOptions): Promise<void> {
  if (!validFilter(options.topic)) return Promise.resolve();
  return withBrokerState(options, 'read', (state) => {
    const entries = state.retained(options.topic, options.limit);
    if (options.json === true) {
      for (const e of entries) process.stdout.write(`${jsonLine(toJson(e))}\n`);
      return;
    }
    for (const e of entries) process.stdout.write(`${[lineText(e.topic), lineText(e.owner ?? '-'), formatBytes(e.payload.length), payloadForLine(e.payload)].join('  ')}\n`);
    const totals = state.retainedTotals();
    process.stdout.write(`${entries.length} shown; the gateway keeps ${totals.messages} retained message(s), ${formatBytes(totals.bytes)}\n`);
  });
}

/**
 * `ferry retained purge <topic or filter>`: deletes the matching retained messages. A running
 * broker reads retained messages from the file at each SUBSCRIBE, so it sees the change at once.
 */
export function purgeRetainedCommand(filter: string, options: RetainedPurgeOptions): Promise<void> {
  if (!validFilter(filter)) return Promise.resolve();
  if (options.yes !== true) {
    return withBrokerState(options, 'read', (state) => {
      const n = state.retained(filter, Number.MAX_SAFE_INTEGER).length;
      fail(`would delete ${n} retained message(s) matching '${lineText(filter)}'; run again with --yes to delete them`);
    });
  }
  return withBrokerState(options, 'write', (state) => {
    const topics = state.purgeRetained(filter);
    if (options.json === true) process.stdout.write(`${jsonLine({ purged: topics })}\n`);
    else process.stdout.write(`deleted ${topics.length} retained message(s) matching '${lineText(filter)}'\n`);
  });
}

function validFilter(filter: string | undefined): boolean {
  const reason = filter === undefined ? undefined : invalidFilterReason(filter);
  if (reason !== undefined) fail(`invalid topic filter '${lineText(filter ?? '')}': ${reason}`);
  return reason === undefined;
}

function toJson(e: RetainedEntry) {
  const { text, encoding } = payloadText(e.payload);
  return { topic: e.topic, owner: e.owner, bytes: e.payload.length, expiresAt: e.expiresAt === null ? null : when(e.expiresAt), payload: text, payloadEncoding: encoding };
}
