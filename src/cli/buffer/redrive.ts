import type { DataDirOptions } from '../load.ts';
import { CHUNK_ROWS, inChunks } from './chunks.ts';
import { requireBridge, withBuffer } from './open.ts';

export interface RedriveOptions extends DataDirOptions {
  readonly bridge: string;
}

/**
 * Moves the dead letters the bridge has when the redrive starts (BufferStore.redrive in short
 * transactions): a letter that dies again meanwhile is not moved twice.
 */
export function redriveCommand(options: RedriveOptions): Promise<void> {
  const { bridge } = options;
  return withBuffer(options, 'write', async (store, path) => {
    requireBridge(store, bridge, path);
    const last = store.lastDeadLetter(bridge);
    const shown = { what: `moving the dead letters of bridge '${bridge}'`, of: store.stats(bridge).deadLetters };
    const moved = await inChunks(() => store.writeTransaction(() => store.redriveSome(bridge, last, CHUNK_ROWS)), shown);
    process.stdout.write(
      moved === 0
        ? `bridge '${bridge}' has no dead letters\n`
        : `moved ${moved} dead letter${moved === 1 ? '' : 's'} of bridge '${bridge}' back into its log (as new messages, for every sink of the bridge)\n`,
    );
  });
}
