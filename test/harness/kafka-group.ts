import './kafkajs-patched.ts';
import { setTimeout as sleep } from 'node:timers/promises';
import { Kafka, Partitioners, logLevel, type Admin, type Producer } from 'kafkajs';
import { randomName } from './services.ts';

/** A test's handle on Kafka: topic creation, producing, and a group's committed offsets. */
export interface KafkaTestClient {
  createTopic(topic: string, partitions?: number): Promise<void>;
  /** Produces records (to partition 0 unless given) and resolves with their offsets. */
  produce(topic: string, records: readonly { key?: string; value: string | Buffer; headers?: Record<string, string>; partition?: number }[]): Promise<string[]>;
  /** The group's committed offset per partition ("-1" when none). */
  committed(groupId: string, topic: string): Promise<Record<number, string>>;
  /** Polls `committed` until `check` holds; rejects with the last value after `timeoutMs`. */
  waitForCommitted(groupId: string, topic: string, check: (offsets: Record<number, string>) => boolean, timeoutMs?: number): Promise<Record<number, string>>;
  /** The group's state as the coordinator sees it ("Stable", "Empty", "Dead", ...). */
  groupState(groupId: string): Promise<string>;
  close(): Promise<void>;
}

export async function kafkaTestClient(brokers: string[]): Promise<KafkaTestClient> {
  const kafka = new Kafka({ clientId: randomName('ferry-test-'), brokers, logLevel: logLevel.NOTHING });
  const admin: Admin = kafka.admin();
  const producer: Producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await Promise.all([admin.connect(), producer.connect()]);
  const committed = async (groupId: string, topic: string) => {
    const [result] = await admin.fetchOffsets({ groupId, topics: [topic] });
    return Object.fromEntries((result?.partitions ?? []).map((p) => [p.partition, p.offset]));
  };
  return {
    createTopic: async (topic, partitions = 1) => {
      await admin.createTopics({ topics: [{ topic, numPartitions: partitions, replicationFactor: 1 }], waitForLeaders: true });
    },
    produce: async (topic, records) => {
      const offsets: string[] = [];
      for (const r of records) {
        const [meta] = await producer.send({ topic, acks: -1, messages: [{ key: r.key ?? null, value: r.value, headers: r.headers ?? {}, partition: r.partition ?? 0 }] });
        offsets.push(meta?.baseOffset ?? '?');
      }
      return offsets;
    },
    committed,
    waitForCommitted: async (groupId, topic, check, timeoutMs = 30_000) => {
      const deadline = Date.now() + timeoutMs;
      let last = await committed(groupId, topic);
      while (!check(last)) {
        if (Date.now() > deadline) throw new Error(`committed offsets of ${groupId} on ${topic} stayed ${JSON.stringify(last)}`);
        await sleep(100);
        last = await committed(groupId, topic);
      }
      return last;
    },
    groupState: async (groupId) => {
      const { groups } = await admin.describeGroups([groupId]);
      return groups[0]?.state ?? 'Unknown';
    },
    close: async () => {
      await Promise.all([admin.disconnect(), producer.disconnect()]);
    },
  };
}
