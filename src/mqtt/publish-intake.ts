import type { Aedes, Client, PublishPacket } from 'aedes';
import { Observable, type Subscriber } from 'rxjs';
import type { Logger } from 'pino';
import type { Counters } from '../core/component.ts';
import { isFerryError } from '../core/errors.ts';
import { createSharedDelivery, fanOut, fanOutAll, type Delivery, type SharedDeliveryHandlers } from '../core/delivery.ts';
import { type Envelope, createEnvelope } from '../core/envelope.ts';
import type { Source } from '../core/stream.ts';
import { type TopicLimits, invalidTopicReason, topicMatches } from '../core/topic.ts';
import { type Identity, mayPublish } from './acl.ts';
import { aedesInternals } from './aedes-internals.ts';
import { DeviceOrigins } from './device-origins.ts';
import { type NotedMessage, ResendMemory } from './resend-memory.ts';
import { TopicMemo } from './topic-memo.ts';
import { payloadBytes, propertyHeaders, samePayload } from './publish-packet.ts';
import type { ClientRefusals } from './client-refusals.ts';
import {
  type Acknowledged,
  MALFORMED_PACKET,
  QOS_LABELS,
  QUOTA_EXCEEDED,
  SERVER_BUSY,
  SERVER_SHUTTING_DOWN,
  TOPIC_NAME_INVALID,
  UnstoredRefusals,
  refusalOutcome,
} from './intake-answers.ts';
import { type StringProperties, malformedProperties } from './property-strings.ts';

export interface PublishIntakeOptions {
  readonly logger: Logger;
  readonly counters: Counters;
  /** Longest and deepest topic a client may publish to. */
  readonly topicLimits: TopicLimits;
  /** True when devices log in and publish within their ACL; false leaves every topic but `$` ones open. */
  readonly acl: boolean;
  /** The identity a client logged in with, if any. */
  identity(client: Client): Identity | undefined;
  /** Where refused publishes are logged (rate-limited) and counted towards disconnecting their client. */
  readonly refusals: ClientRefusals;
}

interface Tap {
  readonly name: string;
  readonly filters: readonly string[];
  readonly subscriber: Subscriber<Delivery>;
}

/**
 * How long, and for how many messages in all, a stored message is remembered so that a resend
 * of it (DUP set) is not stored again; a resend arriving later is stored as a new message.
 */
const RESEND_WINDOW_MS = 5 * 60_000;
const RESEND_MEMORY_ENTRIES = 100_000;
/** Longest a resend waits for its original to be settled before it is taken anyway (the original may be held by a handler). */
const RESEND_WAIT_MS = 5_000;
/**
 * The device publishes of the embedded broker on their way to the bridges' taps (aedes'
 * authorizePublish hook calls `authorize`): topic and ACL checks, one device's messages kept
 * in order around QoS 2 repeats, the refusal of messages that were not stored, and the count
 * of deliveries in flight that a drain waits for.
 */
export class PublishIntake {
  readonly #aedes: Aedes;
  readonly #options: PublishIntakeOptions;
  readonly #taps = new Set<Tap>();
  /** Why each topic is invalid, undefined when it is valid (the limits are the intake's for good). */
  readonly #invalidTopics = new TopicMemo((topic) => invalidTopicReason(topic, this.#options.topicLimits));
  /** The taps each topic goes to, in their order (not to be changed), until the taps change. */
  readonly #topicTaps = new TopicMemo((topic) => this.#matchingTaps(topic));
  readonly #origins = new DeviceOrigins((client) => this.#options.identity(client));
  #inFlight = 0;
  #drained: (() => void) | undefined;
  /** Set by drain: publishes at QoS 1 and 2 are refused from then on. */
  #draining = false;
  /** Per client, the last of its publishes waiting behind a QoS 2 repeat lookup. */
  readonly #behind = new WeakMap<Client, Promise<void>>();
  /** Refuses what was not stored so that the device sends it again. */
  readonly #unstored = new UnstoredRefusals();
  /** Devices' recent QoS 1 and 2 messages, to recognise a resend of one already stored. */
  readonly #resends = new ResendMemory({ windowMs: RESEND_WINDOW_MS, maxEntries: RESEND_MEMORY_ENTRIES });
  /** What settles a device's QoS 0 message, shared by all of them (each delivery's context is its envelope). */
  readonly #qos0Handlers: SharedDeliveryHandlers<Envelope> = {
    onAck: () => this.#settled(),
    onNack: ({ topic, origin }, error) => {
      this.#settled();
      this.#options.counters.count('mqtt.publish.qos0_not_stored');
      this.#options.logger.debug({ topic, clientId: origin.clientId, err: error }, 'QoS 0 message not stored');
    },
  };
  /** What settles a QoS 1 or 2 message: its PUBACK (or PUBREC) once stored, else a refusal. */
  readonly #acknowledgedHandlers: SharedDeliveryHandlers<Acknowledged> = {
    onAck: ({ noted, callback }) => {
      this.#settled();
      if (noted !== undefined) this.#resends.stored(noted);
      callback(null);
    },
    onNack: (taken, error) => this.#notTaken(taken, error),
    isAbandoned: ({ client, abandonable }) => abandonable && (client as Client).closed,
  };

  constructor(aedes: Aedes, options: PublishIntakeOptions) {
    this.#aedes = aedes;
    this.#options = options;
  }

  /** Deliveries not yet settled (their devices are waiting for an acknowledgement). */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** A source of the device messages whose topics match any of `filters`. */
  tap(name: string, filters: readonly string[]): Source {
    return new Observable<Delivery>((subscriber) => {
      const tap: Tap = { name, filters, subscriber };
      this.#taps.add(tap);
      this.#topicTaps.forget();
      return () => {
        this.#taps.delete(tap);
        this.#topicTaps.forget();
      };
    });
  }

  /**
   * Refuses QoS 1 and 2 publishes from now on; resolves when in-flight deliveries settled (true)
   * or `timeoutMs` passed (false).
   */
  drain(timeoutMs: number): Promise<boolean> {
    this.#draining = true;
    if (this.#inFlight === 0) return Promise.resolve(true);
    return new Promise<boolean>((done) => {
      const timer = setTimeout(() => {
        this.#drained = undefined;
        done(false);
      }, timeoutMs);
      this.#drained = () => {
        clearTimeout(timer);
        done(true);
      };
    });
  }

  /** Completes every tap: the broker is closing. */
  close(): void {
    for (const tap of this.#taps) tap.subscriber.complete();
  }

  #matchingTaps(topic: string): readonly Tap[] {
    const taps: Tap[] = [];
    for (const tap of this.#taps) if (tap.filters.some((filter) => topicMatches(filter, topic))) taps.push(tap);
    return taps;
  }

  /** Logs a refused publish: a client's through its refusal log, the gateway's own (no client) in full. */
  #refused(client: Client | null, reason: string, message: string, detail: Record<string, unknown>): void {
    if (client === null) this.#options.logger.warn({ reason, ...detail }, message);
    else this.#options.refusals.refused(client, { reason, message, detail });
  }

  /** aedes' authorizePublish. */
  authorize(client: Client | null, packet: PublishPacket, callback: (error?: Error | null) => void): void {
    const { counters } = this.#options;
    // Only the server sets a Subscription Identifier [MQTT-3.3.4-6]: aedes passed a device's on to
    // subscribers without one of their own, and kept it with a retained message. Dropped, as
    // Mosquitto does; also from a will carried over a restart (no client here): its properties
    // are the ones its device sent in the CONNECT.
    const sent = packet.properties as { subscriptionIdentifier?: unknown } | undefined;
    if (sent?.subscriptionIdentifier !== undefined) delete sent.subscriptionIdentifier;
    const invalid = this.#invalidTopics.get(packet.topic);
    if (invalid !== undefined) {
      counters.count('mqtt.publish.refused', { reason: 'invalid_topic' });
      this.#refused(client, 'invalid_topic', `publish refused: invalid topic; ${refusalOutcome(client, packet.qos, true)}`, {
        topic: packet.topic.slice(0, 200),
        detail: invalid,
      });
      // aedes (as patched) answers with the error's reason code (MQTT 5).
      callback(Object.assign(new Error(`invalid topic: ${invalid}`), { reasonCode: TOPIC_NAME_INVALID }));
      return;
    }
    const malformed = malformedProperties(packet.properties as StringProperties | undefined);
    if (malformed !== undefined) {
      // A Malformed Packet [MQTT-1.5.4-1]: the connection is closed with DISCONNECT 0x81. A will
      // carried over a restart (no client here) is not published either, as a live one is not.
      counters.count('mqtt.publish.refused', { reason: 'malformed' });
      this.#refused(client, 'malformed', `publish refused: malformed packet; ${client === null ? 'not published' : 'closing the connection'}`, {
        topic: packet.topic.slice(0, 200),
        detail: malformed,
      });
      const error = new Error(`malformed packet: ${malformed}`);
      if (client === null) callback(error);
      else this.#unstored.refuse(client, error, MALFORMED_PACKET, callback, error.message);
      return;
    }
    if (client !== null && packet.topic.startsWith('$') && !this.#options.acl) {
      counters.count('mqtt.publish.refused', { reason: 'reserved_topic' });
      this.#refused(client, 'reserved_topic', `publish refused: reserved topic; ${refusalOutcome(client, packet.qos)}`, { topic: packet.topic.slice(0, 200) });
      callback(new Error(`publishing to ${packet.topic} is not allowed`));
      return;
    }
    if (client !== null && this.#options.acl) {
      const identity = this.#options.identity(client);
      if (identity === undefined || !mayPublish(identity, packet.topic)) {
        counters.count('mqtt.publish.refused', { reason: 'acl' });
        this.#refused(client, 'acl', `publish refused by the ACL; ${refusalOutcome(client, packet.qos)}`, { topic: packet.topic });
        callback(new Error(`publishing to ${packet.topic} is not allowed`));
        return;
      }
    }
    if (client === null) {
      this.#take(client, packet, callback);
      return;
    }
    const behind = this.#behind.get(client);
    const repeat = packet.qos > 0 && packet.dup;
    if (behind === undefined && !repeat) {
      this.#take(client, packet, callback);
      return;
    }
    // A resend is looked up before it is taken; the client's later publishes wait behind it, so
    // that the bridges get one device's messages in the order it sent them.
    const run = async () => {
      try {
        if (repeat) await this.#takeUnlessRepeat(client, packet, callback);
        else this.#take(client, packet, callback);
      } catch (error) {
        callback(error instanceof Error ? error : new Error(String(error)));
      }
    };
    const step = (behind ?? Promise.resolve()).then(run);
    this.#behind.set(client, step);
    void step.then(() => {
      if (this.#behind.get(client) === step) this.#behind.delete(client);
    });
  }

  /**
   * A message sent again (DUP set), taken only when its first copy was not stored:
   *
   * - QoS 2 whose PUBREC was lost: aedes keeps the ones it answered until PUBREL, and answers a
   *   repeat with PUBREC alone. The taps saw it already (they sit in the hook that runs before
   *   that check), so it goes past them, exactly once as QoS 2 says.
   * - QoS 1 or 2 sent again on a new connection because the PUBACK (PUBREC) never reached the
   *   device, typically when its connection died as the gateway answered (issue 16, item 9): the
   *   resend memory has the first copy, stored, and the resend is answered without being stored
   *   a second time. A first copy not settled yet is waited for (at most RESEND_WAIT_MS): a
   *   held one whose connection closed is dropped, and then the resend is taken.
   *
   * Only the same message counts: a packet id can be left over from a session the device
   * lost, and a new message under it must be taken.
   */
  async #takeUnlessRepeat(client: Client, packet: PublishPacket, callback: (error?: Error | null) => void): Promise<void> {
    const { counters } = this.#options;
    if (packet.qos === 2) {
      let stored: { topic?: string; payload?: unknown } | undefined;
      try {
        stored = (await aedesInternals(this.#aedes).persistence.incomingGetPacket(client, packet)) as typeof stored;
      } catch {
        stored = undefined; // not stored: a message whose first copy never got this far
      }
      if (stored !== undefined && stored.topic === packet.topic && samePayload(stored.payload, packet.payload)) {
        counters.count('mqtt.publish.duplicates', { qos: '2' });
        callback(null);
        return;
      }
    }
    const earlier =
      packet.messageId === undefined ? undefined : this.#resends.lookup(client.id, this.#options.identity(client)?.username, packet.messageId, packet.topic, payloadBytes(packet));
    if (earlier !== undefined) {
      let timer: NodeJS.Timeout | undefined;
      const stored = await Promise.race([
        this.#resends.outcome(earlier),
        new Promise<false>((resolve) => {
          timer = setTimeout(() => resolve(false), RESEND_WAIT_MS);
        }),
      ]);
      clearTimeout(timer);
      if (stored === true) {
        counters.count('mqtt.publish.duplicates', { qos: String(packet.qos) });
        callback(null);
        return;
      }
      // Stored by some bridges only: the resend is for the others.
      if (stored !== false) {
        this.#take(client, packet, callback, stored);
        return;
      }
    }
    this.#take(client, packet, callback);
  }

  /** Hands an accepted publish to the taps whose filters match it, but those named in `storedBy` (which took it before). */
  #take(client: Client | null, packet: PublishPacket, callback: (error?: Error | null) => void, storedBy?: ReadonlySet<string>): void {
    const { counters } = this.#options;
    // A will carries its CONNECT properties; the Will Delay Interval is valid only in CONNECT,
    // and a strict MQTT 5 subscriber drops a PUBLISH that carries it (issue 12).
    const willProperties = packet.properties as { willDelayInterval?: number } | undefined;
    if (willProperties?.willDelayInterval !== undefined) delete willProperties.willDelayInterval;
    if (this.#draining && packet.qos > 0 && client !== null) {
      // The bridges are about to stop: a message taken now could be acknowledged unstored.
      counters.count('mqtt.publish.refused', { reason: 'shutting_down' });
      this.#unstored.refuse(client, new Error('gateway shutting down: message not stored'), SERVER_SHUTTING_DOWN, callback);
      return;
    }
    counters.count('mqtt.messages.received', QOS_LABELS[packet.qos]);
    // The taps that take it (nearly always one); a resend's, but those that stored it already.
    const taken = this.#topicTaps.get(packet.topic);
    const taps = storedBy === undefined ? taken : taken.filter((tap) => !storedBy.has(tap.name));
    const first = taps[0];
    const matching = taps.length > 1 ? taps : undefined;
    if (first === undefined) {
      if (storedBy !== undefined) counters.count('mqtt.publish.duplicates', QOS_LABELS[packet.qos]);
      callback(null);
      return;
    }
    const { properties } = packet;
    const payload = payloadBytes(packet);
    const envelope = createEnvelope({
      topic: packet.topic,
      payload,
      origin: this.#origins.get(client, packet.qos, packet.retain),
      headers: properties === undefined ? undefined : propertyHeaders(properties),
    });
    // What a resend of this message would repeat: a device resends QoS 1 and 2 only.
    const noted: NotedMessage | undefined =
      client === null || packet.qos === 0 || packet.messageId === undefined
        ? undefined
        : this.#resends.note(client.id, envelope.origin.username, packet.messageId, packet.topic, payload);
    // A QoS 1 or 2 message from a live connection is abandoned once that connection closes
    // before its PUBACK: the device still has it. Not a will (aedes publishes it through this
    // hook once the connection is closed): nobody sends that again.
    const abandonable = client !== null && packet.qos > 0 && !client.closed;
    this.#inFlight += 1;
    if (packet.qos === 0 && client !== null) {
      // QoS 0 has no acknowledgement to hold back (issue 11): aedes forwards it and reads on at
      // once, and the message goes into the next group commit of the bridges that take it. At
      // most once: one the buffer refuses, or that a crash catches before that commit, is gone.
      callback(null);
      const qos0 = createSharedDelivery(envelope, this.#qos0Handlers, envelope);
      if (matching === undefined) first.subscriber.next(qos0);
      else {
        const copies = fanOut(qos0, matching.length);
        for (let i = 0; i < matching.length; i++) (matching[i] as Tap).subscriber.next(copies[i] as Delivery);
      }
      return;
    }
    const upstream = createSharedDelivery(envelope, this.#acknowledgedHandlers, { client, packet, callback, noted, abandonable });
    if (matching === undefined) {
      first.subscriber.next(upstream);
      return;
    }
    // With several bridges, one that did not take it settles the message once all have, noting which did.
    const deliveries =
      noted === undefined
        ? fanOut(upstream, matching.length)
        : fanOutAll(upstream, matching.length, (acked) => this.#resends.partlyStored(noted, new Set(matching.filter((_, i) => acked[i]).map((tap) => tap.name))));
    for (let i = 0; i < matching.length; i++) (matching[i] as Tap).subscriber.next(deliveries[i] as Delivery);
  }

  /** A QoS 1 or 2 message not taken: its device must send it again. */
  #notTaken({ client, packet, callback, noted, abandonable }: Acknowledged, error: Error): void {
    this.#settled();
    if (noted !== undefined) this.#resends.notStored(noted); // unless fanOutAll noted which bridges took it
    if (abandonable && (client as Client).closed) {
      // Abandoned (the buffer counted and logged it): nobody is left to tell, the device sends it again.
      callback(error);
      return;
    }
    this.#options.counters.count('mqtt.publish.nacked');
    // Through the refusal log: one line per device and interval while a buffer refuses, not one per message.
    const message = 'message not taken; closing the device connection unacknowledged so it is sent again';
    const detail = { topic: packet.topic, error: error.message };
    if (client === null) {
      this.#options.logger.warn({ ...detail, err: error }, message);
      callback(error);
      return;
    }
    this.#options.refusals.log.refused({ who: { clientId: client.id }, reason: 'not_stored', message, detail });
    this.#unstored.refuse(client, error, isFerryError(error, 'MESSAGE_REJECTED') && error.retryable ? QUOTA_EXCEEDED : SERVER_BUSY, callback);
  }

  #settled(): void {
    this.#inFlight -= 1;
    if (this.#inFlight === 0) this.#drained?.();
  }
}
