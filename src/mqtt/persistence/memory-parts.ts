import { createRequire } from 'node:module';
import type { Readable } from 'node:stream';
import type { StoredPacket } from './packet-codec.ts';

/*
 * The parts of aedes-persistence (11, pinned by package.json's overrides) that the SQLite
 * persistence builds on, in one place: its in-memory implementation serves as the index of
 * subscriptions, and its Packet class shapes queued packets as that implementation does. Both
 * are CommonJS without type declarations for these paths. The package's own conformance suite
 * (test/integration/broker-persistence-abstract.test.ts) fails when an upgrade changes them.
 */
const require = createRequire(import.meta.url);

/** A subscription as aedes stores it for a client. */
export interface SubscriptionRecord {
  readonly topic: string;
  readonly qos: number;
  readonly rh?: number | undefined;
  readonly rap?: boolean | undefined;
  readonly nl?: boolean | undefined;
  /** MQTT 5 Subscription Identifier, present only when the subscription carried one. */
  readonly subscriptionIdentifier?: number | undefined;
}

/** A persistent session's subscription matching a topic (QoS 1 and 2 only). */
export interface TopicSubscription {
  readonly clientId: string;
  readonly topic: string;
  readonly qos: number;
}

export interface ClientRef {
  readonly id: string;
}

/**
 * aedes-persistence's in-memory subscriptions (a topic trie of QoS 1 and 2 subscriptions and a
 * map per client). Each method changes the maps before it returns its promise, so a lookup
 * made right after a call, without awaiting it, already sees the change.
 */
export interface SubscriptionIndex {
  addSubscriptions(client: ClientRef, subs: readonly SubscriptionRecord[]): Promise<void>;
  removeSubscriptions(client: ClientRef, topics: readonly string[]): Promise<void>;
  subscriptionsByClient(client: ClientRef): Promise<SubscriptionRecord[]>;
  countOffline(): Promise<{ subsCount: number; clientsCount: number }>;
  subscriptionsByTopic(topic: string): Promise<TopicSubscription[]>;
  cleanSubscriptions(client: ClientRef): Promise<void>;
  getClientList(topic: string): Readable;
}

interface MemoryPersistenceModule {
  new (): SubscriptionIndex;
  readonly Packet: new (original: StoredPacket, broker?: unknown) => StoredPacket;
}

const memory = require('aedes-persistence/asyncPersistence.js') as MemoryPersistenceModule;

export function createSubscriptionIndex(): SubscriptionIndex {
  return new memory();
}

/** A copy of `packet` with the fields aedes-packet keeps (what the in-memory queues hold). */
export function normalizedPacket(packet: StoredPacket): StoredPacket {
  return new memory.Packet(packet);
}
