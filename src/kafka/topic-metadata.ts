// kafkajs 2.2.4 keeps, for each producer, every topic it was ever asked to write (its cluster's
// `targetTopics`), asks Kafka for the metadata of all of them whenever a new one comes (and
// every 5 minutes), and before every send scans its cached metadata once per topic it knows.
// With a topic per device (`topic: telemetry.${clientId}`) and devices that come and go, a
// gateway's producer knew every device it had ever seen: measured on a real broker, with 10,000
// topics written once each, each metadata request named all 10,000 (about 0.7 s to 0.9 s each)
// and a message to one of 100 devices still sending cost 5.2 ms of CPU, against 0.2 ms with
// 1,000 (docs/bridges.md, "A topic per device").
import { steadyNow } from '../core/steady-clock.ts';

/** The part of kafkajs' Cluster (kafkajs/src/cluster/index.js) that forgetIdleTopics uses. */
export interface TargetTopicsCluster {
  targetTopics: Set<string>;
  readonly mutatingTargetTopics: { acquire(): Promise<void>; release(): Promise<void> };
  readonly brokerPool: { readonly metadata: unknown };
  refreshMetadata(): Promise<void>;
  addMultipleTargetTopics(topics: string[]): Promise<void>;
}

/** Kafka refused a topic: kafkajs then takes back the topics it had just added. */
const REFUSED = new Set(['INVALID_TOPIC_EXCEPTION', 'UNKNOWN_TOPIC_OR_PARTITION', 'TOPIC_AUTHORIZATION_FAILED']);

/** The description of the symbol under which kafkajs' Kafka client keeps its cluster factory. */
const CREATE_CLUSTER = 'private:Kafka:createCluster';

/**
 * Makes the producers of `kafka` (a kafkajs Kafka client) forget a topic not written for `idleMs`:
 * its metadata is no longer asked for, nor kept; written again, it is looked up again, as a new
 * topic is (what the Java producer's `metadata.max.idle.ms` does). Its consumers and admins are
 * left as they are: their topics are subscriptions. Call before creating producers; false when
 * kafkajs does not have what this relies on (its producers then remember every topic, as kafkajs
 * does).
 */
export function forgetIdleTopics(kafka: object, idleMs: number, now: () => number = steadyNow): boolean {
  const client = kafka as Record<symbol, unknown> & { producer?: unknown };
  const key = Object.getOwnPropertySymbols(client).find((s) => s.description === CREATE_CLUSTER);
  const createCluster = key === undefined ? undefined : client[key];
  const producer = client.producer;
  if (key === undefined || typeof createCluster !== 'function' || typeof producer !== 'function') return false;
  // kafkajs' producer() creates its cluster at once, through the factory.
  let creatingProducer = false;
  client[key] = (options: unknown) => {
    const cluster = createCluster(options) as TargetTopicsCluster;
    if (creatingProducer) forgetting(cluster, idleMs, now);
    return cluster;
  };
  client.producer = (...args: unknown[]) => {
    creatingProducer = true;
    try {
      return producer.apply(client, args);
    } finally {
      creatingProducer = false;
    }
  };
  return true;
}

/**
 * Replaces the cluster's addMultipleTargetTopics (which kafkajs' producer calls with a batch's
 * topics at the start of every attempt to send it) with one that does what kafkajs' does (adds
 * the topics under the cluster's lock, refreshes the metadata when one is new, and takes the new
 * ones back when Kafka refuses one) and also forgets the topics not written for `idleMs`. As
 * each attempt adds its topics again, a topic is forgotten during a send of it only when one
 * attempt waits longer than `idleMs` between adding it and looking it up, and another send's new
 * topic refreshes the metadata meanwhile: that attempt fails as "without metadata", and kafkajs
 * retries it, the topic added again. The idempotent producer's sequence numbers are kafkajs'
 * eos manager's, kept for every topic: a topic written again goes on from its last number, as
 * Kafka expects.
 */
export function forgetting(cluster: TargetTopicsCluster, idleMs: number, now: () => number): void {
  /** When each target topic was last written, the least recently written first. */
  const written = new Map<string, number>();
  cluster.addMultipleTargetTopics = async (topics) => {
    await cluster.mutatingTargetTopics.acquire();
    try {
      const at = now();
      const added: string[] = [];
      for (const topic of topics) {
        written.delete(topic);
        written.set(topic, at);
        if (!cluster.targetTopics.has(topic)) {
          cluster.targetTopics.add(topic);
          added.push(topic);
        }
      }
      for (const [topic, last] of written) {
        if (at - last <= idleMs) break;
        written.delete(topic);
        cluster.targetTopics.delete(topic);
      }
      if (added.length === 0 && cluster.brokerPool.metadata) return;
      try {
        await cluster.refreshMetadata();
      } catch (error) {
        if (REFUSED.has((error as { type?: unknown }).type as string)) {
          for (const topic of added) {
            cluster.targetTopics.delete(topic);
            written.delete(topic);
          }
        }
        throw error;
      }
    } finally {
      await cluster.mutatingTargetTopics.release();
    }
  };
}

/** A topic's entry in kafkajs' metadata (its Metadata response, decoded). */
interface TopicMetadata {
  readonly topic: string;
  readonly partitionMetadata: unknown[];
}

interface Metadata {
  readonly topicMetadata?: readonly TopicMetadata[] | null;
}

const indexes = new WeakMap<readonly TopicMetadata[], Map<string, unknown[]>>();

/** The topics of a metadata answer by name, the first entry of a name as `find` gives it; built once per answer (kafkajs replaces the answer, never changes it). */
export function topicIndex(topicMetadata: readonly TopicMetadata[]): Map<string, unknown[]> {
  let index = indexes.get(topicMetadata);
  if (index === undefined) {
    index = new Map();
    for (const { topic, partitionMetadata } of topicMetadata) if (!index.has(topic)) index.set(topic, partitionMetadata);
    indexes.set(topicMetadata, index);
  }
  return index;
}

/** What refreshMetadataIfNecessary uses of kafkajs' BrokerPool. */
export interface MetadataPool {
  readonly metadata: Metadata | null;
  readonly metadataExpireAt: number | null;
  refreshMetadata(topics: string[]): Promise<void>;
}

/**
 * kafkajs' BrokerPool.refreshMetadataIfNecessary (called with every target topic before each
 * send), looking each topic up in an index of the cached metadata rather than through all of it:
 * with T topics known, kafkajs compared up to T×T names per send.
 */
export function refreshMetadataIfNecessary(original: (this: MetadataPool, topics: string[]) => Promise<void>) {
  return async function refreshMetadataIfNecessary(this: MetadataPool, topics: string[]): Promise<void> {
    const { metadata } = this;
    if (metadata?.topicMetadata == null) return original.call(this, topics);
    if (this.metadataExpireAt == null || Date.now() > this.metadataExpireAt) return this.refreshMetadata(topics);
    const index = topicIndex(metadata.topicMetadata);
    if (!topics.every((topic) => index.has(topic))) return this.refreshMetadata(topics);
  };
}

/** What findTopicPartitionMetadata uses of kafkajs' Cluster. */
export interface MetadataCluster {
  readonly brokerPool: { readonly metadata: Metadata | null };
}

/** kafkajs' Cluster.findTopicPartitionMetadata (once per topic of each send), by the index. */
export function findTopicPartitionMetadata(original: (this: MetadataCluster, topic: string) => unknown[]) {
  return function findTopicPartitionMetadata(this: MetadataCluster, topic: string): unknown[] {
    const topicMetadata = this.brokerPool.metadata?.topicMetadata;
    if (topicMetadata == null) return original.call(this, topic);
    return topicIndex(topicMetadata).get(topic) ?? [];
  };
}
