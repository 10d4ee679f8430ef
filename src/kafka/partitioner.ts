import { createRequire } from 'node:module';
import type { ICustomPartitioner, PartitionerArgs } from 'kafkajs';

const require = createRequire(import.meta.url);

/** Keys whose hash is kept; a gateway's keys are its devices' ids. Cleared when full. */
const MAX_KEYS = 10_000;

/**
 * kafkajs' DefaultPartitioner (murmur2 of the key, as the Java client), choosing the same
 * partition for every record, but with each key's hash kept: kafkajs computes murmur2 with a
 * Long object per step and filters the partition list, for every record (~7% of what the
 * gateway allocated per message). Records with a partition or a Buffer key are left to the
 * DefaultPartitioner itself. Call after kafkajs is loaded.
 *
 * A record without a key goes by the murmur2 of its `ferry-id` header (the message's id) where
 * the DefaultPartitioner deals such records round robin: an idempotent sink sends a failed
 * batch again as it went (resend.ts), and Kafka drops a batch it had appended by its producer
 * id and sequence numbers alone. Dealt round robin again, other records would go under the
 * numbers of those appended on a partition, be dropped as duplicates, and never be written.
 */
export function memoizedDefaultPartitioner(defaultPartitioner: ICustomPartitioner): ICustomPartitioner {
  const murmur2 = require('kafkajs/src/producer/partitioners/default/murmur2.js') as (key: string) => number;
  return () => {
    const fallback = defaultPartitioner();
    const hashes = new Map<string, number>();
    return (args: PartitionerArgs) => {
      const { key, partition, headers } = args.message;
      if (partition !== null && partition !== undefined) return fallback(args);
      if (key === null || key === undefined) {
        const id = headers?.['ferry-id'];
        return typeof id === 'string' ? (murmur2(id) & 0x7fffffff) % args.partitionMetadata.length : fallback(args);
      }
      if (typeof key !== 'string') return fallback(args);
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
