import type { Delivery } from '../core/delivery.ts';
import { FerryError } from '../core/errors.ts';
import type { TracedMessage } from '../core/tracing.ts';

const NOT_VERIFIED = new FerryError(
  'STORAGE_FAILED',
  "not acknowledged: the gateway stopped while the buffer's integrity check ran or after it failed; a corrupt buffer is moved aside at the next start",
  { component: 'buffer', retryable: true },
);

interface Gated {
  readonly delivery: Delivery;
  readonly traced?: TracedMessage | undefined;
}

/**
 * The acknowledgements of stored QoS 1 and 2 messages, held while the buffer's integrity check
 * runs after the start (a large buffer closed cleanly, see openChecked): a message is not
 * acknowledged into a buffer the next start may find corrupt and move aside. Passed, the held
 * ones are acknowledged. Not passed, they stay unacknowledged until the gateway stops (their
 * devices send them again after the restart), without a refusal that would close their
 * connections and bring them back at once; the writer stores nothing more (`refusing`).
 */
export class AckGate {
  #held: Gated[] | undefined;
  #refused: Gated[] = [];
  #refusing = false;

  /** Whether the check failed: nothing is acknowledged any more in this run. */
  get refusing(): boolean {
    return this.#refusing;
  }

  /** The buffer was found corrupt: from now on nothing is acknowledged in this run, as after a failed check. */
  refuse(): void {
    this.#refusing = true;
  }

  /** Holds every acknowledgement from now on; the function returned ends the hold with the check's verdict. */
  hold(): (passed: boolean) => void {
    const held: Gated[] = [];
    this.#held = held;
    return (passed) => {
      if (this.#held !== held) return;
      this.#held = undefined;
      this.#refusing ||= !passed;
      for (const entry of held) this.ack(entry);
    };
  }

  /** Acknowledges a stored message now, or later (held), or not in this run (refusing). */
  ack(entry: Gated): void {
    if (this.#held !== undefined) {
      this.#held.push(entry);
    } else if (this.#refusing) {
      this.#refused.push(entry);
    } else {
      entry.traced?.end();
      entry.delivery.ack();
    }
  }

  /** The writer closes: what is held is refused, as the connections close (the devices send it again). */
  close(): void {
    const waiting = [...(this.#held ?? []), ...this.#refused];
    this.#held = undefined;
    this.#refused = [];
    for (const { delivery, traced } of waiting) {
      traced?.end('failed');
      delivery.nack(NOT_VERIFIED);
    }
  }
}
