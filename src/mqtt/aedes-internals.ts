import type { EventEmitter } from 'node:events';
import type { Aedes, Client } from 'aedes';

/*
 * aedes internals Ferry relies on (the same in 1.2 and 2.0.0-beta.1 as patched), named here so
 * an upgrade that changes them shows up in one place. aedes' types do not declare them.
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
  /** Connected clients by id (prototype-free with patches/aedes+2.0.0-beta.1.patch). */
  readonly clients: Readonly<Record<string, Client | undefined>>;
  /** Set only by patches/aedes+2.0.0-beta.1.patch. */
  readonly maxInflightInbound?: number;
}

export interface ClientInternals {
  /** The next packet id aedes gives an outgoing QoS 1/2 message of this client. */
  _nextId: number;
  readonly _parser: EventEmitter;
  readonly subscriptions: Readonly<Record<string, { readonly qos: number } | undefined>>;
  /** True from CONNECT until the connect sequence (session restore included) finished. */
  readonly connecting: boolean;
  /**
   * Clean Start of the CONNECT, read after authentication to drop the saved session's queued
   * messages; with the CONNECT's own `clean` it makes a connection start a clean session.
   */
  _cleanStart: boolean;
}

export function aedesInternals(aedes: Aedes): AedesInternals {
  return aedes as unknown as AedesInternals;
}
