import type { Delivery } from '../core/delivery.ts';
import { FerryError } from '../core/errors.ts';
import type { TracedMessage } from '../core/tracing.ts';
import { ABANDONED } from './abandoned.ts';
import type { BufferPolicy } from './config.ts';
import type { AppendEntry, BufferStore } from './store.ts';

/**
 * A delivery waiting for the group commit, in the shape the store appends (no copy per message):
 * `envelope` is the delivery's, or, with `deadLetter` set, the one a message refused at ingress leaves.
 */
export interface Pending extends AppendEntry {
  readonly delivery: Delivery;
  /** Set for a sampled message: its span ends at the commit. */
  readonly traced?: TracedMessage | undefined;
  /** Set once it was counted as buffer.refused: held, it is tried again at each retry, and refused again it is not counted again. */
  refusedOnce?: true;
}

/** What a QoS 0 message the buffer cannot take now is nacked with: at most once, it is not held (nobody would send it again). */
export const QOS0_NOT_STORED = new FerryError('MESSAGE_REJECTED', 'QoS 0 message not stored: the buffer cannot take it now', { component: 'buffer', retryable: true });

export interface AdmissionContext {
  /** The writer's held deliveries: those this commit holds are added to them. */
  readonly held: Pending[];
  /** Held ones tried again: no bridge is held back by the others. */
  readonly retrying: boolean;
  readonly storageDown: () => boolean;
  readonly policies: ReadonlyMap<string, BufferPolicy>;
  readonly store: BufferStore;
  /** The entry to store instead of one larger than its bridge's maxBytes (its dead letter). */
  readonly tooLarge: (entry: Pending, maxBytes: number) => Pending;
  /** Counts and logs a message dropped under drop-newest (it is acked here). */
  readonly droppedNewest: (entry: Pending) => void;
}

export interface Admission {
  /** What the commit appends (messages and dead letters), in order. */
  readonly accepted: Pending[];
  /** What the commit stores or holds, in the batch's order: held again in that order if the append fails. */
  readonly kept: Pending[];
  /** Bridges under drop-oldest that the commit takes past a limit: trimmed back in the append's transaction. */
  readonly overfull: ReadonlySet<string>;
  /** Per bridge, the messages and payload bytes the commit appends. */
  readonly incoming: ReadonlyMap<string, { messages: number; bytes: number }>;
  /** Deliveries held because their bridge is full, this time or again (the writer's state is `refusing`). */
  readonly refused: number;
  /** Of those, the ones refused for the first time (counted as buffer.refused): a held one is tried again at each retry. */
  readonly firstRefused: number;
  /** Per bridge, deliveries nacked because their connection closed before they were stored (each once: it is held no more). */
  readonly abandoned: Map<string, number> | undefined;
  /**
   * Set when a statement on the buffer failed while deciding (counting a bridge's usage met a
   * corrupt page, say): nothing is to be appended, and `kept` also holds every delivery from the
   * one it failed at on, undecided, so that the caller holds them all as after a failed append.
   */
  readonly failed?: unknown;
}

/**
 * Which of a group commit's deliveries the buffer takes, under each bridge's limits and overflow
 * policy: appended, held unacknowledged (QoS 1 and 2, while their bridge is full under `refuse`
 * or the disk cannot take them, and any later ones of the same bridge behind them), dropped
 * (`drop-newest`; QoS 0 that cannot be taken now, nacked), or nacked as abandoned. A message
 * larger than its bridge's `maxBytes` goes to the dead letters: it could never be stored.
 */
export function admit(batch: readonly Pending[], ctx: AdmissionContext): Admission {
  const { held, retrying, policies, store } = ctx;
  const heldBridges = retrying ? new Set<string>() : new Set(held.map((h) => h.bridge));
  const accepted: Pending[] = [];
  const kept: Pending[] = [];
  const overfull = new Set<string>();
  const incoming = new Map<string, { messages: number; bytes: number }>();
  let refused = 0;
  let firstRefused = 0;
  let abandoned: Map<string, number> | undefined;
  const hold = (entry: Pending, counted: boolean): void => {
    if (entry.delivery.envelope.origin.qos === 0) {
      entry.traced?.end('dropped');
      entry.delivery.nack(QOS0_NOT_STORED);
      return;
    }
    held.push(entry);
    kept.push(entry);
    if (!counted) return;
    refused += 1;
    if (entry.refusedOnce === true) return;
    entry.refusedOnce = true;
    firstRefused += 1;
  };
  // One try for the batch, not one a message: what throws here is a statement on the buffer (usage).
  let index = 0;
  try {
    for (; index < batch.length; index++) {
      let entry = batch[index] as Pending;
      const { bridge } = entry;
      if (entry.delivery.abandoned?.() === true) {
        abandoned ??= new Map();
        abandoned.set(bridge, (abandoned.get(bridge) ?? 0) + 1);
        entry.traced?.end('abandoned');
        entry.delivery.nack(ABANDONED);
        continue;
      }
      if (heldBridges.has(bridge) || (!retrying && ctx.storageDown())) {
        hold(entry, !ctx.storageDown());
        continue;
      }
      const policy = policies.get(bridge);
      const bytes = entry.delivery.envelope.payload.byteLength;
      if (entry.deadLetter === undefined && policy !== undefined && bytes > policy.maxBytes) entry = ctx.tooLarge(entry, policy.maxBytes);
      if (entry.deadLetter !== undefined) {
        // Not in the log: the bridge's limits do not apply.
        accepted.push(entry);
        kept.push(entry);
        continue;
      }
      const usage = store.usage(bridge);
      let add = incoming.get(bridge);
      if (add === undefined) {
        add = { messages: 0, bytes: 0 };
        incoming.set(bridge, add);
      }
      const fits = policy === undefined || (usage.messages + add.messages + 1 <= policy.maxMessages && usage.bytes + add.bytes + bytes <= policy.maxBytes);
      if (!fits && policy !== undefined) {
        if (policy.overflow === 'refuse') {
          hold(entry, true);
          heldBridges.add(bridge);
          continue;
        }
        if (policy.overflow === 'drop-newest') {
          ctx.droppedNewest(entry);
          entry.traced?.end('dropped');
          entry.delivery.ack();
          continue;
        }
        overfull.add(bridge);
      }
      add.messages += 1;
      add.bytes += bytes;
      accepted.push(entry);
      kept.push(entry);
    }
  } catch (error) {
    for (; index < batch.length; index++) kept.push(batch[index] as Pending);
    return { accepted: [], kept, overfull, incoming, refused, firstRefused, abandoned, failed: error };
  }
  return { accepted, kept, overfull, incoming, refused, firstRefused, abandoned };
}
