import type { Aedes, AedesPublishPacket, Client } from 'aedes';
import { type DiscardReason, type MessageNumbering, aedesInternals, clientInternals, onClientPacket, onPublishDiscarded, reservePacketId } from './aedes-internals.ts';
import { type Command, type CommandOutcome, type PublishedCommand, answeredOutcome, keptAnswer } from './command-types.ts';
import type { CommandRecords, HeldCopy } from './persistence/command-memory.ts';
import { steadyNow } from '../core/steady-clock.ts';

export type { Command, CommandOutcome, PublishedCommand } from './command-types.ts';

interface Pending {
  /** Clients that were sent or will be sent the message with a packet id, for the no-subscriber check. */
  forwarded: number;
  /** Clients a QoS 0 copy went to, less those it was discarded for: it reached them, and none of them will acknowledge it. */
  readonly sentQos0: Set<string>;
  /** Each connected subscriber was handed its copy (the publish's callback came), or it was adopted from sessions: before, a QoS 0 copy may still follow a refusal. */
  published: boolean;
  /** Where this command's packet ids are recorded, and for which client, to forget them once it is settled or its copy discarded. */
  readonly copies: { readonly sent: Map<number, Pending>; readonly id: number; readonly clientId: string }[];
  readonly topic: string;
  readonly qos: 0 | 1;
  /** MQTT 5 subscribers that answered with a PUBACK reason code of 0x80 or more, and the code; or the reason the broker discarded their copy. */
  readonly refusals: Map<string, number | DiscardReason>;
  readonly settle: (outcome: CommandOutcome) => void;
}

/** A command waiting for its answer, and how many of its publishers still wait with it. */
interface Waited {
  readonly pending: Pending;
  readonly outcome: Promise<CommandOutcome>;
  waiters: number;
}

/*
 * aedes' `ack` event carries no packet for clean sessions
 * (https://github.com/moscajs/aedes/issues/257), so PUBACKs are matched by the packet id this
 * file assigns to each client's copy of a command (aedes internals: aedes-internals.ts).
 * The event cannot replace them: it gives the copy aedes stored for the session, and a clean
 * session's or a retained copy is never stored; it carries no reason code, so an MQTT 5
 * refusal (0x80 and up) would look like an ack; and aedes numbers a live copy only after
 * authorizeForward, with nothing public telling which id it got.
 */
type TrackedPacket = AedesPublishPacket & { messageExpiry?: number; brokerId?: string; brokerCounter?: number };

/**
 * Publishes commands through aedes and tells when the device acknowledged each one. A QoS 1
 * command resolves `acked` on the first PUBACK of that message from any subscriber of its
 * topic, including a device with a persistent session that was offline at publish time and
 * acks after it reconnects.
 */
export class CommandTracker {
  readonly #aedes: Aedes;
  /** Unsettled commands by brokerCounter. */
  readonly #pending = new Map<number, Pending>();
  /** Per connected client: packet id of each command copy sent to it. */
  readonly #sent = new WeakMap<Client, Map<number, Pending>>();
  /** Commands held by sessions from before (an earlier run), by the broker id and counter their copies carry. */
  readonly #adopted = new Map<string, Pending>();
  /** Unsettled QoS 1 commands that have an id, by their key (id and topic): one published again waits with the first. */
  readonly #waiting = new Map<string, Waited>();
  readonly #records: CommandRecords | undefined;

  /** `records`: where commands are kept (broker.db), so that one published again is not sent twice; none in memory. */
  constructor(aedes: Aedes, records?: CommandRecords) {
    this.#aedes = aedes;
    this.#records = records;
    aedes.on('client', (client: Client) => this.#watch(client));
    onPublishDiscarded(aedes, (_topic, clientId, reason, message) => this.#discarded(clientId, reason, message));
  }

  publish(command: Command): PublishedCommand {
    const aedes = aedesInternals(this.#aedes);
    const key = command.qos === 1 && command.id !== undefined ? JSON.stringify([command.id, command.topic]) : undefined;
    // Published again while it waits here (its Kafka partition given back to this member, an
    // outbox row read again after its transaction was lost): the first copy's answer settles
    // both. Its copies may not be in broker.db yet, and `memory` keeps none: sent again, a device
    // got it twice, and its PUBACK settled only one of the two (the other waited for expiresAt).
    const waited = key === undefined ? undefined : this.#waiting.get(key);
    if (waited !== undefined) return this.#waiter(waited, 'held');
    const answer = key === undefined ? undefined : this.#remembered((records) => records.answeredBy(key, steadyNow()));
    if (answer !== undefined) return { outcome: Promise.resolve(answeredOutcome(answer)), cancel: () => {}, again: 'answered' };
    let settle: (outcome: CommandOutcome) => void = () => {};
    const outcome = new Promise<CommandOutcome>((resolve) => {
      settle = resolve;
    });
    const counter = ++aedes.counter;
    let timer: NodeJS.Timeout | undefined;
    const adopted: string[] = [];
    const pending: Pending = {
      forwarded: 0,
      sentQos0: new Set(),
      published: false,
      copies: [],
      topic: command.topic,
      qos: command.qos,
      refusals: new Map(),
      settle: (result) => {
        if (this.#pending.get(counter) !== pending) return;
        this.#pending.delete(counter);
        clearTimeout(timer);
        for (const { sent, id } of pending.copies) if (sent.get(id) === pending) sent.delete(id);
        for (const numbered of adopted) this.#adopted.delete(numbered);
        if (key !== undefined) {
          if (this.#waiting.get(key)?.pending === pending) this.#waiting.delete(key);
          this.#remember(key, counter, result, command.expiresAt, pending.sentQos0);
        }
        settle(result);
      },
    };
    this.#pending.set(counter, pending);
    const first: Waited = { pending, outcome, waiters: 0 };
    if (key !== undefined) this.#waiting.set(key, first);
    const held = key === undefined ? [] : (this.#remembered((records) => records.held(key, steadyNow())) ?? []);
    const expiresAt = held.length > 0 ? adoptedExpiry(command.expiresAt, held) : command.expiresAt;
    timer = setTimeout(() => pending.settle({ status: 'expired' }), Math.max(0, expiresAt - steadyNow()));
    timer.unref();
    if (held.length > 0) {
      this.#adopt(pending, held, adopted);
      return this.#waiter(first, 'held');
    }
    if (key !== undefined) this.#records?.expect(aedes.id, counter, key);
    this.#aedes.publish(commandPacket(command, aedes.id, counter), (error) => {
      if (error) pending.settle({ status: 'failed', error });
      else if (command.qos === 0) pending.settle({ status: 'sent' });
      else {
        pending.published = true;
        if (pending.forwarded === 0) this.#checkSubscribers(command.topic, pending);
        else if (pending.refusals.size > 0) this.#checkRefused(pending);
      }
    });
    return this.#waiter(first);
  }

  /** One publisher's wait for a command: its outcome, or `cancelled` once this publisher stops waiting. */
  #waiter(waited: Waited, again?: 'held'): PublishedCommand {
    waited.waiters += 1;
    let stop: () => void = () => {};
    const stopped = new Promise<CommandOutcome>((resolve) => {
      stop = () => resolve({ status: 'cancelled' });
    });
    let cancelled = false;
    const cancel = () => {
      if (cancelled) return;
      cancelled = true;
      stop();
      waited.waiters -= 1;
      if (waited.waiters === 0) waited.pending.settle({ status: 'cancelled' });
    };
    const outcome = Promise.race([waited.outcome, stopped]);
    return again === undefined ? { outcome, cancel } : { outcome, cancel, again };
  }

  /**
   * aedes' authorizeForward hook: runs for each client a message is about to be sent to. A
   * message past its expiry is not sent (aedes then drops it from the client's session); a
   * pending one gets its packet id here so that the client's PUBACK can be matched to it.
   */
  forward(client: Client, packet: AedesPublishPacket): AedesPublishPacket | null {
    const tracked = packet as TrackedPacket;
    if (tracked.brokerCounter === undefined) return packet;
    const own = tracked.brokerId === aedesInternals(this.#aedes).id;
    // A message past its expiry is not sent, except a QoS 2 one sent before (DUP): its
    // delivery is completed whatever its expiry (MQTT 5 [MQTT-4.3.3-7]).
    if (own && tracked.messageExpiry !== undefined && tracked.messageExpiry <= steadyNow() && !(packet.qos === 2 && packet.dup)) return null;
    // Else a copy queued before (an earlier run's) of a command published again.
    const pending =
      (own ? this.#pending.get(tracked.brokerCounter) : undefined) ?? (this.#adopted.size === 0 ? undefined : this.#adopted.get(`${tracked.brokerId}\n${tracked.brokerCounter}`));
    return pending === undefined ? packet : this.#forwarded(client, packet, pending);
  }

  #forwarded(client: Client, packet: AedesPublishPacket, pending: Pending): AedesPublishPacket | null {
    if (packet.qos === 0) {
      pending.sentQos0.add(client.id);
      return packet;
    }
    if (packet.messageId === undefined) {
      // Live delivery: aedes numbers the copy after this hook, from the same counter.
      if (clientInternals(client).grantedQoS(packet.topic) === 0) {
        pending.sentQos0.add(client.id);
        return packet;
      }
      const reserved = reservePacketId(client);
      // None free: aedes is closing the connection; the copy is not sent.
      if (reserved === 0) return null;
      packet.messageId = reserved;
    }
    // Otherwise a copy queued in a persistent session, numbered already, sent on reconnect.
    pending.forwarded += 1;
    this.#track(client, packet.messageId, pending);
    return packet;
  }

  /**
   * A client's copy of a command was discarded, for good: the patched aedes reports it only when
   * that client will never be sent it (patches/aedes+2.0.0-beta.1.patch). Larger than the
   * Maximum Packet Size it announced, past the copies kept waiting while its Receive Maximum is
   * reached, or past its expiry while it waited there, the copy is also out of the client's
   * session; a shared subscription's copy with no member left to take it is reported only for a
   * clean session (a persistent one keeps it and sends it on return). So that client answered
   * it, as if it had refused it. Without this the command waited for its expiry, holding its
   * Kafka partition's commit, and was then reported as not acknowledged.
   */
  #discarded(clientId: string, reason: DiscardReason, { brokerId, brokerCounter }: MessageNumbering): void {
    if (brokerCounter === undefined) return;
    const pending =
      (brokerId === aedesInternals(this.#aedes).id ? this.#pending.get(brokerCounter) : undefined) ??
      (this.#adopted.size === 0 ? undefined : this.#adopted.get(`${brokerId}\n${brokerCounter}`));
    // A QoS 0 command is settled `sent` once handed to the broker: a copy too large for one
    // client does not make it unsent for the others, who were sent it.
    if (pending === undefined || pending.qos === 0) return;
    // aedes freed the packet id of the discarded copy: the client's next message may go out
    // under it, and that message's PUBACK is no answer to this command.
    for (const { sent, id, clientId: to } of pending.copies) if (to === clientId && sent.get(id) === pending) sent.delete(id);
    // A QoS 0 copy discarded (the client subscribed at QoS 0) reached nobody either.
    pending.sentQos0.delete(clientId);
    pending.refusals.set(clientId, reason);
    this.#checkRefused(pending);
  }

  #track(client: Client, messageId: number, pending: Pending): void {
    let sent = this.#sent.get(client);
    if (sent === undefined) {
      sent = new Map();
      this.#sent.set(client, sent);
    }
    sent.set(messageId, pending);
    pending.copies.push({ sent, id: messageId, clientId: client.id });
  }

  /**
   * The command was published before and sessions hold copies of it: it is not published again,
   * and a PUBACK of any of them settles it. A copy sent already (a packet id) to a client
   * connected now is matched by that id; one sent later, by the numbering it carries (forward).
   */
  #adopt(pending: Pending, held: readonly HeldCopy[], adopted: string[]): void {
    const clients = aedesInternals(this.#aedes).clients;
    pending.forwarded = held.length;
    pending.published = true;
    for (const copy of held) {
      const numbered = `${copy.brokerId}\n${copy.brokerCounter}`;
      this.#adopted.set(numbered, pending);
      adopted.push(numbered);
      const client = clients[copy.clientId];
      if (copy.messageId !== null && client !== undefined) this.#track(client, copy.messageId, pending);
    }
  }

  /**
   * A client's answer is kept (acked, or refused for good, with its reason), so that the command
   * is not sent again and, read again, has the outcome it had; so is a command sent at QoS 0 only
   * (`sent`): it counted as delivered, at most once, and sent again a QoS 0 subscriber got it twice.
   */
  #remember(key: string, counter: number, result: CommandOutcome, expiresAt: number, sentTo: ReadonlySet<string>): void {
    this.#records?.forget(counter);
    const answer = keptAnswer(result, sentTo.values().next().value);
    if (answer !== undefined) this.#remembered((records) => records.answered(key, expiresAt, answer));
  }

  /** What is kept of commands helps, and never stops one: a failure to read or write it is a command sent as if nothing were kept. */
  #remembered<T>(use: (records: CommandRecords) => T): T | undefined {
    if (this.#records === undefined) return undefined;
    try {
      return use(this.#records);
    } catch {
      return undefined;
    }
  }

  #watch(client: Client): void {
    onClientPacket(client, (packet) => {
      if (packet.cmd !== 'puback' || packet.messageId === undefined) return;
      const sent = this.#sent.get(client);
      const pending = sent?.get(packet.messageId);
      if (pending === undefined) return;
      const { reasonCode = 0 } = packet;
      if (reasonCode < 0x80) {
        pending.settle({ status: 'acked', clientId: client.id });
        return;
      }
      pending.refusals.set(client.id, reasonCode);
      this.#checkRefused(pending);
    });
  }

  /**
   * A refusal is the command's outcome only when every subscriber that could acknowledge it
   * (a persistent session, connected or not, or a connected client, subscribed at QoS 1 or 2)
   * refused it (or had its copy discarded for good): a monitoring client answering 0x80
   * does not speak for the device. Checked once the broker delivered it to everyone connected,
   * so that a QoS 0 copy written after a refusal counts.
   */
  #checkRefused(pending: Pending): void {
    if (!pending.published) return;
    const aedes = aedesInternals(this.#aedes);
    aedes.persistence.subscriptionsByTopic(pending.topic).then(
      (subscriptions) => {
        const candidates = new Set(subscriptions.map((s) => s.clientId));
        for (const client of Object.values(aedes.clients)) {
          if (client !== undefined && clientInternals(client).grantedQoS(pending.topic) > 0) candidates.add(client.id);
        }
        if (![...candidates].every((id) => pending.refusals.has(id))) return;
        // Every client that could acknowledge it refused: their answer, whoever got a QoS 0 copy
        // (a monitoring client does not speak for the device). None at all: the QoS 0 copies decide.
        const refusal = [...pending.refusals].find(([id]) => candidates.has(id));
        if (refusal === undefined) this.#unanswered(pending);
        else pending.settle(refusalOutcome(refusal));
      },
      () => {}, // the expiry settles it
    );
  }

  /**
   * No client could acknowledge the command (none subscribed at QoS 1 or 2): `sent` when a QoS 0
   * copy reached a client (delivered, at most once), else the discard of a copy offered to one,
   * else `no_subscriber`.
   */
  #unanswered(pending: Pending): void {
    const refusal = pending.refusals.entries().next().value;
    if (pending.sentQos0.size > 0) pending.settle({ status: 'sent' });
    else if (refusal === undefined) pending.settle({ status: 'no_subscriber' });
    else pending.settle(refusalOutcome(refusal));
  }

  #checkSubscribers(topic: string, pending: Pending): void {
    // aedes queued a copy for every persistent session subscribed at QoS 1 or 2, connected or not.
    aedesInternals(this.#aedes)
      .persistence.subscriptionsByTopic(topic)
      .then(
        (subscriptions) => {
          if (pending.forwarded > 0 || subscriptions.length > 0) return;
          this.#unanswered(pending);
        },
        (error: unknown) => pending.settle({ status: 'failed', error: error instanceof Error ? error : new Error(String(error)) }),
      );
  }
}

/** The packet of a command, numbered by the broker as aedes numbers a message. */
function commandPacket(command: Command, brokerId: string, brokerCounter: number): TrackedPacket {
  return {
    cmd: 'publish',
    topic: command.topic,
    payload: command.payload,
    qos: command.qos,
    retain: command.retain,
    dup: false,
    brokerId,
    brokerCounter,
    // aedes-packet carries this field with each queued copy; forward() reads it, and aedes
    // turns it into the remaining Message Expiry Interval of a copy sent to an MQTT 5 device later.
    messageExpiry: command.expiresAt,
    // Written only to MQTT 5 devices.
    properties: {
      messageExpiryInterval: Math.max(1, Math.ceil((command.expiresAt - steadyNow()) / 1000)),
      ...(command.headers === undefined ? {} : { userProperties: { ...command.headers } }),
      ...(command.responseTopic === undefined ? {} : { responseTopic: command.responseTopic }),
      ...(command.correlationData === undefined ? {} : { correlationData: command.correlationData }),
    },
  };
}

/**
 * The copies a command adopts expire as the command published before did: it waits no longer
 * than the last of them, nor than its own expiry. A copy without an expiry leaves it its own.
 */
function adoptedExpiry(expiresAt: number, held: readonly HeldCopy[]): number {
  let last = Number.NEGATIVE_INFINITY;
  for (const copy of held) last = Math.max(last, copy.expiresAt ?? Number.POSITIVE_INFINITY);
  return Math.min(expiresAt, last);
}

/** A client's refusal (a PUBACK reason code, or why the broker discarded its copy) as the command's outcome. */
function refusalOutcome([clientId, refusal]: [string, number | DiscardReason]): CommandOutcome {
  switch (refusal) {
    case 'packetTooLarge':
      return { status: 'too_large', clientId };
    case 'receiveQueueFull':
      return { status: 'discarded', clientId, reason: 'receive_queue_full' };
    case 'noShareMember':
      return { status: 'discarded', clientId, reason: 'no_share_member' };
    case 'expired':
      return { status: 'expired' };
    default:
      return { status: 'refused', clientId, reasonCode: refusal };
  }
}
