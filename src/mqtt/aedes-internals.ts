import type { EventEmitter } from 'node:events';
import type { Aedes, Client } from 'aedes';

/*
 * aedes internals Ferry relies on (the same in 1.2 and 2.0.0-beta.1 as patched), named here so
 * an upgrade that changes them shows up in one place: no other file reaches past aedes'
 * types, and test/unit/mqtt/aedes-internals.test.ts fails when one of them is missing or
 * behaves otherwise. aedes' types do not declare them, or do not say when they hold.
 */
export interface AedesInternals {
  readonly id: string;
  /** Source of `brokerCounter`, which identifies a message across its copies to each client. */
  counter: number;
  readonly persistence: {
    /** Persistent sessions' subscriptions at QoS 1 and 2 (clean sessions' are not kept here). */
    subscriptionsByTopic(topic: string): Promise<readonly { readonly clientId: string }[]>;
    /** The inbound QoS 2 message stored under this packet id, awaiting PUBREL; rejects when none is. */
    incomingGetPacket(client: Client, packet: { messageId?: number }): Promise<unknown>;
    /** Removes subscriptions from a client's saved session. */
    removeSubscriptions(client: Client, topics: readonly string[]): Promise<unknown>;
  };
  /**
   * Client ids a new connection is taking over from a connected one: set from the start of the
   * takeover until the new one is registered, so while the old one's end ('clientDisconnect') runs.
   */
  readonly _takingOver: ReadonlySet<string>;
  /** Connected clients by id (prototype-free with patches/aedes+2.0.0-beta.1.patch). */
  readonly clients: Readonly<Record<string, Client | undefined>>;
  /** Set only by patches/aedes+2.0.0-beta.1.patch. */
  readonly maxInflightInbound?: number;
  /** MQTT 5 messages kept per client while its Receive Maximum is reached; set only by the patch. */
  readonly outboundQueueLimit?: number;
  /** Set by the patch: a QoS 1 PUBACK leaves once the message is retained and queued for offline sessions. */
  readonly pubackAfterStore?: boolean;
  /** Set by the patch: live messages a resumed session holds while its queue is read (its queue first, each message once). */
  readonly resumeHeldLimit?: number;
  /** Set by the patch: a message matching several of a client's subscriptions goes at the highest QoS granted among them. */
  readonly highestOverlappingQoS?: boolean;
  /**
   * Set by the patch: protocol errors end the connection with their reason code (a QoS 2 flood
   * past the Receive Maximum, which the CONNACK advertises, with DISCONNECT 0x93), reported on
   * 'clientError' or 'connectionError' with the error's `reasonCode` (protocol-refusals.ts).
   */
  readonly protocolErrorsAnswered?: boolean;
  /** Set by the patch: an outgoing QoS 1/2 message never gets a packet id still in flight to its client. */
  readonly uniquePacketIds?: boolean;
  /** Set by the patch: the authorizeUnsubscribe hook can refuse a client's UNSUBSCRIBE (nothing removed). */
  readonly unsubscribeAuthorized?: boolean;
  /**
   * Set by the patch: a client that closed while it connected (session lookup, will, takeover)
   * is never registered nor counted in connectedClients, and its close leaves alone a
   * connection holding its client id, unless its connect changed the session stored under that
   * id (a Clean Start's discard, the will step): then it takes that connection over. A takeover
   * finishing while the id is held again (the connection taken over still closing, another
   * takeover finished first) unregisters or takes that one over too. Of two connections of one
   * id whose connects overlap, the one that looked the session up later keeps the id: the other
   * yields to it (0x8E once connected) and times no delayed will, and its will step stores its
   * will only while the will is still its own.
   */
  readonly closedConnectsDropped?: boolean;
  /** Set by the patch: the clock MQTT 5 Message Expiry is stamped and checked with (the `now` option, Date.now by default). */
  readonly now?: () => number;
}

/** Why the patched aedes did not send a message to one client (its 'publishDiscarded' event). */
export type DiscardReason = 'packetTooLarge' | 'receiveQueueFull' | 'noShareMember' | 'expired';

export interface ClientInternals {
  /** Where aedes' search for the next free packet id of this client's outgoing QoS 1/2 messages starts. */
  _nextId: number;
  /**
   * Set by the patch: takes the next packet id not in flight to the client, as aedes numbers its
   * own copies; undefined when all 65,535 are (aedes then closes the connection).
   */
  nextPacketId(): number | undefined;
  /** mqtt-packet's parser of the client's connection: `parse` emits 'packet' for each whole packet in the bytes, which aedes handles then. */
  readonly _parser: EventEmitter & { parse(bytes: Buffer): number };
  readonly subscriptions: Readonly<Record<string, { readonly qos: number } | undefined>>;
  /** True from CONNECT until the connect sequence (session restore included) finished. */
  readonly connecting: boolean;
  /**
   * The CONNECT's will, set as the connect sequence reaches its will (storeWill): just before
   * the persistence's delWill, and putWill stores it right after when there is one.
   */
  readonly will?: unknown;
  /** A CONNACK was written, accepting or refusing the connection. */
  readonly connackSent: boolean;
  /** A CONNACK accepting the connection was written (its write's callback came; set before `connected`). */
  readonly _connackAccepted: boolean;
  /**
   * Clean Start of the CONNECT, read after authentication to drop the saved session's queued
   * messages; with the CONNECT's own `clean` it makes a connection start a clean session.
   */
  _cleanStart: boolean;
  /** Set by the patch: the highest QoS among the client's non-shared subscriptions that match `topic`, 0 when none does. */
  grantedQoS(topic: string): number;
}

/** A packet a client sent, as aedes' parser (mqtt-packet) emits it. */
export interface ClientPacket {
  readonly cmd: string;
  readonly messageId?: number;
  /** MQTT 5 reason code (PUBACK and others); absent under MQTT 3.1.1. */
  readonly reasonCode?: number;
}

export function aedesInternals(aedes: Aedes): AedesInternals {
  return aedes as unknown as AedesInternals;
}

export function clientInternals(client: Client): ClientInternals {
  return client as unknown as ClientInternals;
}

/**
 * Takes the packet id aedes would give the client's next outgoing QoS 1/2 message, from the same
 * counter and skipping the ids in flight to the client as aedes does (lib/qos-packet.js): a copy
 * whose `messageId` is set before aedes numbers it keeps that id, so its PUBACK can be matched.
 * 0, no packet id, when none is free: aedes is closing the connection then.
 */
export function reservePacketId(client: Client): number {
  return clientInternals(client).nextPacketId() ?? 0;
}

/**
 * Calls `listener` for each message the patched aedes did not send to a client (larger than
 * its Maximum Packet Size, past the queue kept while its Receive Maximum is reached, or a
 * shared subscription's message left with no member to take it).
 */
export function onPublishDiscarded(aedes: Aedes, listener: (topic: string, clientId: string, reason: DiscardReason, message: MessageNumbering) => void): void {
  const events: EventEmitter = aedes;
  events.on('publishDiscarded', (packet: { topic: string } & MessageNumbering, client: { id: string }, reason: DiscardReason) =>
    listener(packet.topic, client.id, reason, { brokerId: packet.brokerId, brokerCounter: packet.brokerCounter }),
  );
}

/** The broker and counter that number a message, the same in each client's copy of it (aedes-packet). */
export interface MessageNumbering {
  readonly brokerId?: string | undefined;
  readonly brokerCounter?: number | undefined;
}

/** Calls `listener` with every packet the client sends, as soon as it is parsed (before aedes handles it). */
export function onClientPacket(client: Client, listener: (packet: ClientPacket) => void): void {
  clientInternals(client)._parser.on('packet', listener);
}

/**
 * Hands aedes bytes of the client's connection that it has not read (peer-close.ts: the device
 * closed while they waited behind the packets aedes is handling): each whole packet in them is
 * handled at once, alongside those, as packets read in one batch are. A DISCONNECT among them
 * ends the connection cleanly (no will, unless an MQTT 5 reason code asks for it).
 */
export function handleUnread(client: Client, bytes: Buffer): void {
  clientInternals(client)._parser.parse(bytes);
}
