/**
 * The messages of one partition taken but not yet committable, in fetch order. Messages are
 * acked in any order; the commit point only moves past a message once it and every message
 * fetched before it are acked, so a commit never skips an unacked message.
 *
 * Offsets need not be contiguous (compaction and transaction markers leave gaps): the
 * window follows the offsets it was given, and the commit point is the lowest unacked
 * offset, or one past the last taken offset when all are acked.
 */
export class OffsetWindow {
  /** Entries from the commit point on; `acked` ones wait behind an unacked one. */
  readonly #entries: { readonly offset: bigint; acked: boolean }[] = [];
  /** Index of the first entry still in the window (entries before it are dropped lazily). */
  #head = 0;
  #next: bigint | undefined;

  /** Offset of the next message this window expects; smaller ones were taken already. */
  get next(): bigint | undefined {
    return this.#next;
  }

  /** Messages taken and not yet behind the commit point. */
  get size(): number {
    return this.#entries.length - this.#head;
  }

  /** Every taken message is acked. */
  get settled(): boolean {
    return this.size === 0;
  }

  /** Takes the message at `offset`; offsets must grow. */
  take(offset: bigint): void {
    if (this.#next !== undefined && offset < this.#next) throw new Error(`offset ${offset} taken out of order (next is ${this.#next})`);
    this.#entries.push({ offset, acked: false });
    this.#next = offset + 1n;
  }

  /** Marks `offset` acked; returns true when that moved the commit point. */
  ack(offset: bigint): boolean {
    const entry = this.#find(offset);
    if (entry === undefined || entry.acked) return false;
    entry.acked = true;
    const before = this.#head;
    while (this.#head < this.#entries.length && (this.#entries[this.#head] as { acked: boolean }).acked) this.#head += 1;
    if (this.#head > 1024 && this.#head * 2 > this.#entries.length) {
      this.#entries.splice(0, this.#head);
      this.#head = 0;
      return true;
    }
    return this.#head !== before;
  }

  /**
   * The offset to commit (Kafka commits the offset of the next message to read): the lowest
   * unacked offset, or one past the last taken; undefined before anything was taken.
   */
  get commitPoint(): bigint | undefined {
    const first = this.#entries[this.#head];
    return first === undefined ? this.#next : first.offset;
  }

  #find(offset: bigint): { readonly offset: bigint; acked: boolean } | undefined {
    // Binary search: entries are in offset order.
    let low = this.#head;
    let high = this.#entries.length - 1;
    while (low <= high) {
      const mid = (low + high) >>> 1;
      const entry = this.#entries[mid] as { readonly offset: bigint; acked: boolean };
      if (entry.offset === offset) return entry;
      if (entry.offset < offset) low = mid + 1;
      else high = mid - 1;
    }
    return undefined;
  }
}
