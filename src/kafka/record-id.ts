import { hash as digest } from 'node:crypto';
import { formatUuid } from '../core/envelope.ts';

/** A UUIDv7 holds 48 bits of milliseconds. */
const MAX_MS = 2 ** 48 - 1;

const bytes = new Uint8Array(16);

/**
 * The id of a Kafka record as a message: the same each time the record is read (after a
 * restart or a rebalance read it again), so that what a sink or a device already has can be told
 * from a new message, as the `ferry-id` of a command, the history's key or a Postgres unique key.
 * A UUIDv7, as the ids made at ingress: the record's timestamp in its time field, and the rest
 * from a SHA-256 of its topic, partition and offset (and timestamp: a topic deleted and made
 * again, whose offsets start again at 0, gives other ids).
 */
export function recordId(topic: string, partition: number, offset: string, timestamp: number): string {
  const ms = Number.isInteger(timestamp) && timestamp >= 0 && timestamp <= MAX_MS ? timestamp : 0;
  // The one-shot digest: about 1.9 µs a record here, against 3.4 µs for createHash().update().digest().
  const hash = digest('sha256', `${topic}\n${partition}\n${offset}\n${ms}`, 'buffer');
  // 48 bits of big-endian milliseconds, then the version, the variant, and 74 bits of the hash.
  let rest = ms;
  for (let i = 5; i >= 0; i--) {
    bytes[i] = rest % 256;
    rest = Math.floor(rest / 256);
  }
  for (let i = 6; i < 16; i++) bytes[i] = hash[i] as number;
  bytes[6] = 0x70 | ((bytes[6] as number) & 0x0f);
  bytes[8] = 0x80 | ((bytes[8] as number) & 0x3f);
  return formatUuid(bytes);
}
