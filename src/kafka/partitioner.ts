import { createRequire } from 'node:module';
import type { ICustomPartitioner, PartitionerArgs } from 'kafkajs';

const require = createRequire(import.meta.url);

/** Keys whose hash is kept; a gateway's keys are its devices' ids. Cleared when full. */
const MAX_KEYS = 10_000;

/**
 * kafkajs' DefaultPartitioner (murmur2 of the key, as the Java client), choosing the same
 * partition for every record, but with each key's hash kept: kafkajs computes murmur2 with a
 * Long object per step and filters the partition list, for every record (~7% of what the
 * gateway allocated per message). Records without a key, or with a partition or a Buffer
 * key, are left to the DefaultPartitioner itself. Call after kafkajs is loaded.
 */
export function memoizedDefaultPartitioner(defaultPartitioner: ICustomPartitioner): ICustomPartitioner {
  const murmur2 = require('kafkajs/src/producer/partitioners/default/murmur2.js') as (key: string) => number;
  return () => {
    const fallback = defaultPartitioner();
    const hashes = new Map<string, number>();
    return (args: PartitionerArgs) => {
      const { key, partition } = args.message;
      if (typeof key !== 'string' || (partition !== null && partition !== undefined)) return fallback(args);
      let hash = hashes.get(key);
      if (hash === undefined) {
        if (hashes.size >= MAX_KEYS) hashes.clear();
        hash = murmur2(key) & 0x7fffffff;
        hashes.set(key, hash);
      }
      return hash % args.partitionMetadata.length;
    };
  };
}
