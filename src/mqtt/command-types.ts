import type { Answer, KeptAnswer } from './persistence/command-memory.ts';

/** A message the gateway publishes to devices. */
export interface Command {
  readonly topic: string;
  readonly payload: Buffer;
  readonly qos: 0 | 1;
  readonly retain: boolean;
  /**
   * Epoch ms, by steadyNow() (core/steady-clock.ts), after which the command is no longer
   * sent to a device that comes back: the clock the broker checks it with.
   */
  readonly expiresAt: number;
  /** Sent to MQTT 5 devices as user properties (MQTT 3.1.1 has nowhere to carry them). */
  readonly headers?: Readonly<Record<string, string>>;
  /** MQTT 5 Response Topic and Correlation Data (request/response, MQTT 5 §4.10). */
  readonly responseTopic?: string;
  readonly correlationData?: Buffer;
  /**
   * The message's id: a QoS 1 command published again with the same id and topic (its source
   * delivered it again) is not sent again to a session that holds it or a client that answered it.
   */
  readonly id?: string;
}

export type CommandOutcome =
  /** A subscriber's PUBACK for this very message arrived. */
  | { readonly status: 'acked'; readonly clientId: string }
  /**
   * Published before and answered then, as broker.db of an earlier version kept it: without the
   * QoS it was delivered at (a PUBACK, or a copy sent at QoS 0 only).
   */
  | { readonly status: 'answered'; readonly clientId: string }
  /** An MQTT 5 subscriber answered with a PUBACK reason code of 0x80 or more: it will not take it. */
  | { readonly status: 'refused'; readonly clientId: string; readonly reasonCode: number }
  /** Larger than the Maximum Packet Size an MQTT 5 subscriber announced: discarded for it, never sent [MQTT-3.1.2-25]. */
  | { readonly status: 'too_large'; readonly clientId: string }
  /**
   * The broker dropped the copy of each client that could acknowledge it, for good (out of its
   * session too), without a refusal of the client's own: `receive_queue_full`, an MQTT 5 client's
   * Receive Maximum was reached with as many copies as the broker keeps waiting behind it;
   * `no_share_member`, the member of a shared subscription sent it ended its clean session before
   * its PUBACK, and no other member was left to take it.
   */
  | { readonly status: 'discarded'; readonly clientId: string; readonly reason: DiscardedReason }
  /** Handed to the broker at QoS 0, or only QoS 0 subscribers took it: no acknowledgement will come. */
  | { readonly status: 'sent' }
  /** Nobody, connected or with a persistent session, is subscribed to the topic. */
  | { readonly status: 'no_subscriber' }
  /**
   * `expiresAt` passed without a PUBACK (or the broker dropped the copies waiting for a client's
   * Receive Maximum as past their expiry); a persistent session still holding it drops it. A
   * command published again that took over the copies sessions held of it (`again: 'held'`)
   * expires with the last of them, when it is earlier.
   */
  | { readonly status: 'expired' }
  /** The caller stopped waiting (its bridge stopped). */
  | { readonly status: 'cancelled' }
  | { readonly status: 'failed'; readonly error: Error };

/** Why the broker dropped a command's copies (CommandOutcome `discarded`). */
export type DiscardedReason = 'receive_queue_full' | 'no_share_member';

export interface PublishedCommand {
  readonly outcome: Promise<CommandOutcome>;
  /**
   * Stops waiting: the outcome becomes `cancelled` unless it was settled already. The command is
   * no longer waited for once every caller that published it cancelled.
   */
  cancel(): void;
  /**
   * Set when the command was published before (the same id and topic) and not sent again:
   * `answered`, a client answered it already, and the outcome is that answer at once: `acked`,
   * `refused` or `too_large` as the client answered it, `sent` when it was sent at QoS 0 only, or
   * `answered` when an earlier version kept the answer without its QoS;
   * `held`, sessions hold it still, or it waits for its answer here already, and that answer
   * settles it.
   */
  readonly again?: 'answered' | 'held';
}

/** The `reason` of `commands.refused` for a PUBACK reason code: in hex (`0x87`). */
export function reasonCodeText(reasonCode: number): string {
  return `0x${reasonCode.toString(16)}`;
}

const TOO_LARGE = 'packet_too_large';

/**
 * What is kept of a command's outcome (see CommandRecords), so that read again it has the same
 * one: a client's PUBACK or refusal, or a copy sent at QoS 0 only to `sentQos0` (a client that
 * got one); undefined for an outcome that is no client's answer.
 */
export function keptAnswer(outcome: CommandOutcome, sentQos0: string | undefined): KeptAnswer | undefined {
  switch (outcome.status) {
    case 'acked':
      return { clientId: outcome.clientId, qos: 1, refusal: null };
    case 'refused':
      return { clientId: outcome.clientId, qos: 1, refusal: reasonCodeText(outcome.reasonCode) };
    case 'too_large':
      return { clientId: outcome.clientId, qos: 1, refusal: TOO_LARGE };
    case 'sent':
      return sentQos0 === undefined ? undefined : { clientId: sentQos0, qos: 0, refusal: null };
    default:
      return undefined;
  }
}

/**
 * A command answered before, read again: its outcome as it was then, a refusal as a refusal (its
 * QoS unknown when an earlier version kept the answer; a refusal kept by one reads as delivered).
 */
export function answeredOutcome({ clientId, qos, refusal }: Answer): CommandOutcome {
  if (refusal === TOO_LARGE) return { status: 'too_large', clientId };
  if (refusal !== null && /^0x[0-9a-f]+$/.test(refusal)) return { status: 'refused', clientId, reasonCode: Number.parseInt(refusal, 16) };
  if (qos === 0) return { status: 'sent' };
  return qos === 1 ? { status: 'acked', clientId } : { status: 'answered', clientId };
}
