import type { Delivery } from '../core/delivery.ts';

/**
 * Kafka's answers that an idempotent producer's id or sequence numbers no longer match what the
 * broker has for them (a batch appended under them that the producer does not know of, a
 * producer id the broker forgot): no retry under that id can succeed, so the sink takes a new one.
 */
const PRODUCER_STATE_LOST = new Set(['OUT_OF_ORDER_SEQUENCE_NUMBER', 'UNKNOWN_PRODUCER_ID', 'INVALID_PRODUCER_EPOCH', 'INVALID_PRODUCER_ID_MAPPING']);

/** True when `error` or one of its causes is one of PRODUCER_STATE_LOST. */
export function producerStateLost(error: unknown): boolean {
  for (let e: unknown = error, depth = 0; e !== undefined && e !== null && depth < 5; depth++) {
    const type = (e as { type?: unknown }).type;
    if (typeof type === 'string' && PRODUCER_STATE_LOST.has(type)) return true;
    e = (e as { originalError?: unknown }).originalError ?? (e as { cause?: unknown }).cause;
  }
  return false;
}

/**
 * The batch an idempotent producer failed to write, so that it goes out again as it went: Kafka
 * drops a batch sent again under the same producer id with the same sequence numbers (a batch it
 * had appended before its answer was lost, a broker killed between the two), but only when it is
 * the same batch. The buffer hands the messages of a failed batch over again with those after
 * them, and they would go in one larger batch, which Kafka takes for another (refused as out of
 * order when it had the first, and written twice under a new producer id): a batch that starts
 * with the failed one is split after it.
 *
 * Any other batch goes under a new producer id: Kafka compares sequence numbers only, so other
 * records numbered as the failed ones (the failed batch's first messages dropped from the buffer
 * meanwhile, say) would be taken for the appended batch, acknowledged and not written.
 */
export class Resend {
  #failed: readonly string[] = [];

  /** How to send `batch`: in these parts one after the other, under a new producer id when `renew`. */
  plan(batch: readonly Delivery[]): { readonly parts: (readonly Delivery[])[]; readonly renew: boolean } {
    const failed = this.#failed;
    if (failed.length === 0) return { parts: [batch], renew: false };
    const again = batch.length >= failed.length && failed.every((id, i) => (batch[i] as Delivery).envelope.id === id);
    if (!again) return { parts: [batch], renew: true };
    return { parts: batch.length === failed.length ? [batch] : [batch.slice(0, failed.length), batch.slice(failed.length)], renew: false };
  }

  /** A part was not written: its messages come again first. */
  failed(part: readonly Delivery[]): void {
    this.#failed = part.map((d) => d.envelope.id);
  }

  /** Every part was written (or the producer id renewed): nothing is to be sent again as it went. */
  written(): void {
    this.#failed = [];
  }
}
