import type { DataDirOptions } from '../load.ts';
import { CHUNK_ROWS, inChunks } from './chunks.ts';
import { formatBytes } from './format.ts';
import { fail, requireBridge, withBuffer } from './open.ts';

export interface PurgeOptions extends DataDirOptions {
  readonly bridge: string;
  readonly deadLetters?: boolean;
  readonly yes?: boolean;
}

/**
 * Deletes what the bridge holds when the purge starts (messages arriving meanwhile stay), in
 * short transactions, so a large backlog never holds the gateway's writes for long.
 */
export function purgeCommand(options: PurgeOptions): Promise<void> {
  const { bridge } = options;
  const deadLettersToo = options.deadLetters === true;
  if (options.yes !== true) {
    return withBuffer(options, 'read', (store, path) => {
      requireBridge(store, bridge, path);
      const stats = store.stats(bridge);
      fail(`would delete ${describe(stats.messages, stats.bytes, deadLettersToo ? stats.deadLetters : undefined)} of bridge '${bridge}'; run again with --yes to delete them`);
    });
  }
  return withBuffer(options, 'write', async (store, path) => {
    requireBridge(store, bridge, path);
    const tail = store.tail(bridge);
    const lastDeadLetter = store.lastDeadLetter(bridge);
    const before = store.stats(bridge);
    let bytes = 0;
    const messages = await inChunks(
      () => {
        const removed = store.writeTransaction(() => store.purgeSome(bridge, tail, CHUNK_ROWS));
        bytes += removed.bytes;
        return removed.messages;
      },
      { what: `deleting the messages of bridge '${bridge}'`, of: before.messages },
    );
    const deadLetters = deadLettersToo
      ? await inChunks(() => store.writeTransaction(() => store.purgeDeadLetters(bridge, lastDeadLetter, CHUNK_ROWS)), {
          what: `deleting the dead letters of bridge '${bridge}'`,
          of: before.deadLetters,
        })
      : undefined;
    process.stdout.write(`deleted ${describe(messages, bytes, deadLetters)} of bridge '${bridge}'\n`);
  });
}

function describe(messages: number, bytes: number, deadLetters: number | undefined): string {
  const buffered = `${messages} buffered message${messages === 1 ? '' : 's'} (${formatBytes(bytes)})`;
  return deadLetters === undefined ? buffered : `${buffered} and ${deadLetters} dead letter${deadLetters === 1 ? '' : 's'}`;
}
