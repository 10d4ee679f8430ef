import './kafkajs-patched.ts';
import { Kafka, logLevel } from 'kafkajs';
import { randomName } from './services.ts';

export interface ReadMessage {
  readonly key: string | undefined;
  readonly value: Buffer | null;
  readonly headers: Record<string, string>;
  readonly partition: number;
  readonly offset: string;
  /** The record's timestamp, ms since the epoch (the broker's append time on a LogAppendTime topic). */
  readonly timestamp: number;
}

/** Every message now in `topic`, read from the beginning up to the high watermarks. */
export async function readTopic(brokers: readonly string[], topic: string, timeoutMs = 30_000): Promise<ReadMessage[]> {
  const kafka = new Kafka({ clientId: randomName('ferry-test-reader-'), brokers: [...brokers], logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  let total = 0;
  try {
    const offsets = await admin.fetchTopicOffsets(topic);
    total = offsets.reduce((n, o) => n + Number(o.high) - Number(o.low), 0);
  } finally {
    await admin.disconnect();
  }
  if (total === 0) return [];
  const consumer = kafka.consumer({ groupId: randomName('ferry-test-reader-group-'), maxBytesPerPartition: 8 * 1024 * 1024 });
  const messages: ReadMessage[] = [];
  try {
    await consumer.connect();
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`read ${messages.length} of ${total} messages from ${topic} in ${timeoutMs} ms`)), timeoutMs);
      consumer.on(consumer.events.CRASH, ({ payload }) => {
        if (!payload.restart) reject(payload.error);
      });
      consumer
        .run({
          eachMessage: async ({ partition, message }) => {
            const headers: Record<string, string> = {};
            for (const [k, v] of Object.entries(message.headers ?? {})) headers[k] = String(v);
            messages.push({ key: message.key?.toString(), value: message.value, headers, partition, offset: message.offset, timestamp: Number(message.timestamp) });
            if (messages.length >= total) {
              clearTimeout(timer);
              resolve();
            }
          },
        })
        .catch(reject);
    });
  } finally {
    await consumer.disconnect();
  }
  return messages;
}
