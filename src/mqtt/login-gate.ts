/** How much password checking logins may cause at once. */
export interface LoginGateLimits {
  /** Checks running at once in the whole process (each is a scrypt on libuv's thread pool). */
  readonly concurrent: number;
  /** Checks waiting for a turn, over all addresses; a login past it is refused as busy. */
  readonly queued: number;
  /** Checks from one address, running or waiting. */
  readonly perAddress: number;
  /**
   * Checks for one username, running or waiting; for a username that a credential's pattern
   * matches, checks for that credential (all the usernames sharing its password together).
   */
  readonly perUsername: number;
}

export const DEFAULT_LOGIN_GATE_LIMITS: LoginGateLimits = { concurrent: 2, queued: 256, perAddress: 32, perUsername: 4 };

export type GateRefusal =
  /** One address or one username (credential) has as many checks under way as it may. */
  | 'too_many_attempts'
  /** Every running slot is taken and the queue is full. */
  | 'server_busy';

export type Admission = { readonly ok: true; run<T>(check: () => Promise<T>): Promise<T> } | { readonly ok: false; readonly refusal: GateRefusal };

/**
 * Bounds the password checks that connecting clients can cause (issue 16: 400 parallel
 * CONNECTs for one username had 255 passwords checked, and a burst from one address slowed
 * every other login from 37 ms to 3 s). A login is admitted or refused at once; an admitted
 * check then waits for one of `concurrent` slots. Waiting checks take turns by address, so a
 * burst from one address delays a login from another by at most one check per address ahead.
 */
export class LoginGate {
  readonly #limits: LoginGateLimits;
  readonly #byAddress = new Map<string, number>();
  readonly #bySubject = new Map<string, number>();
  /** Waiting checks per address; Map order is the round-robin order. */
  readonly #waiting = new Map<string, (() => void)[]>();
  #queued = 0;
  #running = 0;

  constructor(limits: LoginGateLimits = DEFAULT_LOGIN_GATE_LIMITS) {
    this.#limits = limits;
  }

  /** Checks under way or waiting (for status and tests). */
  get pending(): number {
    return this.#running + this.#queued;
  }

  /**
   * Admits one login's check or refuses it; synchronous, so a caller that checks a block
   * list first and records the attempt after admission leaves no gap between them. `subjects`
   * is what the `perUsername` bound counts: the username, or the credentials it matches (the
   * check tests each of their passwords), each of which must have room.
   */
  admit(address: string, subjects: string | readonly string[]): Admission {
    const limits = this.#limits;
    const keys = typeof subjects === 'string' ? [subjects] : [...new Set(subjects)];
    if ((this.#byAddress.get(address) ?? 0) >= limits.perAddress || keys.some((key) => (this.#bySubject.get(key) ?? 0) >= limits.perUsername)) {
      return { ok: false, refusal: 'too_many_attempts' };
    }
    if (this.#running >= limits.concurrent && this.#queued >= limits.queued) return { ok: false, refusal: 'server_busy' };
    increment(this.#byAddress, address);
    for (const key of keys) increment(this.#bySubject, key);
    return {
      ok: true,
      run: async <T>(check: () => Promise<T>): Promise<T> => {
        try {
          await this.#turn(address);
          try {
            return await check();
          } finally {
            this.#running -= 1;
            this.#next();
          }
        } finally {
          decrement(this.#byAddress, address);
          for (const key of keys) decrement(this.#bySubject, key);
        }
      },
    };
  }

  #turn(address: string): Promise<void> {
    if (this.#running < this.#limits.concurrent && this.#queued === 0) {
      this.#running += 1;
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      const queue = this.#waiting.get(address);
      if (queue === undefined) this.#waiting.set(address, [resolve]);
      else queue.push(resolve);
      this.#queued += 1;
    });
  }

  /** Starts waiting checks while slots are free, one per address in turn. */
  #next(): void {
    while (this.#running < this.#limits.concurrent) {
      const first = this.#waiting.entries().next();
      if (first.done === true) return;
      const [address, queue] = first.value;
      const wake = queue.shift() as () => void;
      // Served: the address goes to the back of the line, or leaves it when it has no more.
      this.#waiting.delete(address);
      if (queue.length > 0) this.#waiting.set(address, queue);
      this.#queued -= 1;
      this.#running += 1;
      wake();
    }
  }
}

function increment(map: Map<string, number>, key: string): void {
  map.set(key, (map.get(key) ?? 0) + 1);
}

function decrement(map: Map<string, number>, key: string): void {
  const left = (map.get(key) ?? 1) - 1;
  if (left === 0) map.delete(key);
  else map.set(key, left);
}
