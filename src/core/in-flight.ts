/**
 * Messages in flight in the order they were handed, for a consumer that settles them in
 * nearly that order but not quite: its size, the oldest one not settled, and the rest in order.
 *
 * A Set or a Map in insertion order does this too, but with one add and one delete per message
 * its hash table is rebuilt over and over (in V8's sampling heap profile of a handler bridge,
 * about 170 bytes allocated per message for each of two). Here a settled item stays in an
 * array until the front passes it; `add` moves the rest forward, or drops the settled ones in
 * place once they are most of the array. Settling never moves an item, so iterating while
 * items settle is safe.
 */
export class InFlight<T extends object> {
  readonly #items: (T | undefined)[] = [];
  /** The first item not settled, or the end. */
  #head = 0;
  #size = 0;
  readonly #isSettled: (item: T) => boolean;

  /** `isSettled`: true once an item was settled (and `settled()` called for it). */
  constructor(isSettled: (item: T) => boolean) {
    this.#isSettled = isSettled;
  }

  /** Items not settled. */
  get size(): number {
    return this.#size;
  }

  add(item: T): void {
    const items = this.#items;
    if (this.#head >= COMPACT_AT && this.#head * 2 >= items.length) {
      items.copyWithin(0, this.#head);
      items.length -= this.#head;
      this.#head = 0;
    } else if (items.length - this.#head >= COMPACT_AT && items.length - this.#head >= 4 * this.#size) {
      let kept = this.#head;
      for (let i = this.#head; i < items.length; i++) {
        const item = items[i];
        if (item !== undefined && !this.#isSettled(item)) items[kept++] = item;
      }
      items.length = kept;
    }
    items.push(item);
    this.#size += 1;
  }

  /** One item added here was settled (`isSettled` is true for it now): once per item. */
  settled(): void {
    this.#size -= 1;
    const items = this.#items;
    while (this.#head < items.length && this.#isSettled(items[this.#head] as T)) items[this.#head++] = undefined;
    if (this.#head === items.length) {
      items.length = 0;
      this.#head = 0;
    }
  }

  /** The oldest item not settled. */
  first(): T | undefined {
    return this.#items[this.#head];
  }

  *[Symbol.iterator](): IterableIterator<T> {
    for (let i = this.#head; i < this.#items.length; i++) {
      const item = this.#items[i];
      if (item !== undefined && !this.#isSettled(item)) yield item;
    }
  }

  /** Forgets every item. */
  clear(): void {
    this.#items.length = 0;
    this.#head = 0;
    this.#size = 0;
  }
}

/** Settled items an InFlight keeps at most before `add` drops them (when they are most of it). */
const COMPACT_AT = 1024;
