import { Subject, type Subscription } from 'rxjs';
import { createDelivery } from '../core/delivery.ts';
import type { Envelope } from '../core/envelope.ts';
import { FerryError } from '../core/errors.ts';
import type { Sink } from '../core/stream.ts';

/**
 * A sink driven by promises, for one-off writes: each message is a delivery into the same
 * sink a bridge uses, and its promise settles when the sink settles it, that is on the
 * upstream's acknowledgement (resolved) or its final failure (rejected with the error).
 */
export class SinkClient {
  readonly #input = new Subject<ReturnType<typeof createDelivery>>();
  readonly #subscription: Subscription;
  readonly #done: Promise<void>;
  #closed = false;
  #failure: Error | undefined;
  readonly #pending = new Set<(error: Error) => void>();

  constructor(sink: Sink) {
    let finish = () => {};
    this.#done = new Promise((resolve) => (finish = resolve));
    this.#subscription = sink(this.#input).subscribe({
      error: (error: unknown) => {
        this.#failure = error instanceof Error ? error : new Error(String(error));
        for (const reject of this.#pending) reject(this.#failure);
        finish();
      },
      complete: finish,
    });
  }

  write(envelopes: readonly Envelope[]): Promise<void> {
    if (this.#closed) return Promise.reject(new FerryError('SHUTDOWN', 'the client is closed'));
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    return Promise.all(
      envelopes.map(
        (envelope) =>
          new Promise<void>((resolve, reject) => {
            this.#pending.add(reject);
            const settle = () => this.#pending.delete(reject);
            this.#input.next(
              createDelivery(envelope, {
                onAck: () => (settle(), resolve()),
                onNack: (error) => (settle(), reject(error)),
              }),
            );
          }),
      ),
    ).then(() => {});
  }

  /** Writes what was handed over, then closes the connection. */
  async close(): Promise<void> {
    if (this.#closed) return this.#done;
    this.#closed = true;
    this.#input.complete();
    await this.#done;
    this.#subscription.unsubscribe();
  }
}
