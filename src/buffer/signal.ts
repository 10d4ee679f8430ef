/** Wakes waiters: `wait()` resolves at the next `notify()`. */
export class Signal {
  #waiters: (() => void)[] = [];

  /** Waits not yet woken. */
  get waiting(): number {
    return this.#waiters.length;
  }

  wait(): Promise<void> {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  notify(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }
}
