export type PacketRefusalReason = 'packet_too_large' | 'malformed_header';

export interface PacketRefusal {
  readonly reason: PacketRefusalReason;
  readonly detail: string;
  /** Bytes of the chunk before the refused packet: whole packets (or the end of one), fit to deliver. */
  readonly offset: number;
}

/**
 * Follows MQTT 3.1/3.1.1 packet boundaries in a byte stream fed in chunks of any size:
 * reads each fixed header (type byte, then a remaining length of 1–4 bytes, 7 bits each,
 * low group first, 0x80 = more follow) and skips the body it announces. It never copies
 * or keeps a chunk; a body costs O(1) per chunk however many chunks it spans.
 */
export class PacketScanner {
  readonly #maxPacketBytes: number;
  /** Body bytes of the current packet not seen yet. */
  #skip = 0;
  /** True between a packet's type byte and the last byte of its remaining length. */
  #inHeader = false;
  #type = 0;
  #length = 0;
  #lengthBytes = 0;
  #multiplier = 1;

  constructor(maxPacketBytes: number) {
    this.#maxPacketBytes = maxPacketBytes;
  }

  /** Undefined while the stream is acceptable; once it returns a refusal, stop feeding it. */
  scan(chunk: Uint8Array): PacketRefusal | undefined {
    const end = chunk.length;
    let i = 0;
    let start = 0;
    while (i < end) {
      if (this.#skip > 0) {
        const available = end - i;
        if (this.#skip >= available) {
          this.#skip -= available;
          return undefined;
        }
        i += this.#skip;
        this.#skip = 0;
        continue;
      }
      const byte = chunk[i++] as number;
      if (!this.#inHeader) {
        start = i - 1;
        this.#inHeader = true;
        this.#type = byte >> 4;
        this.#length = 0;
        this.#lengthBytes = 0;
        this.#multiplier = 1;
        continue;
      }
      this.#length += (byte & 0x7f) * this.#multiplier;
      this.#multiplier *= 128;
      this.#lengthBytes += 1;
      if ((byte & 0x80) !== 0) {
        if (this.#lengthBytes === 4) {
          return { reason: 'malformed_header', detail: `packet type ${this.#type}: remaining length continues past 4 bytes`, offset: start };
        }
        continue;
      }
      this.#inHeader = false;
      const total = 1 + this.#lengthBytes + this.#length;
      if (total > this.#maxPacketBytes) {
        return { reason: 'packet_too_large', detail: `packet type ${this.#type} announces ${total} bytes; the limit is ${this.#maxPacketBytes}`, offset: start };
      }
      this.#skip = this.#length;
    }
    return undefined;
  }
}
