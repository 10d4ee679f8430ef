import type { Delivery } from '../core/delivery.ts';
import { FerryError } from '../core/errors.ts';
import type { TracedMessage } from '../core/tracing.ts';

const NOT_VERIFIED = new FerryError(
  'STORAGE_FAILED',
  'not acknowledged: the buffer failed its integrity check, or the gateway stopped before the check ended; a corrupt buffer is moved aside at the next start',
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
 * ones are acknowledged; not passed, they are refused (their devices send them again) and so is
 * every later one until the gateway restarts.
 */
export class AckGate {
  #held: Gated[] | undefined;
  #refusing = false;

  /** Whether the check failed: nothing is acknowledged any more. */
  get refusing(): boolean {
    return this.#refusing;
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

  /** Acknowledges a stored message now, later (held), or not at all (refusing). */
  ack(entry: Gated): void {
    if (this.#held !== undefined) {
      this.#held.push(entry);
    } else if (this.#refusing) {
      entry.traced?.end('failed');
      entry.delivery.nack(NOT_VERIFIED);
    } else {
      entry.traced?.end();
      entry.delivery.ack();
    }
  }
}
