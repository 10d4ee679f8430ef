// Payload sizes end to end: the e2e path (50 devices, QoS 1, synchronous=FULL, one bridge to
// Kafka with acks all) with payloads of 200 B, 2 KiB and 16 KiB, each against plain aedes QoS 1
// ingest of the same payloads in the same run: msgs/s and MB/s of payload in Kafka, latency,
// the gateway's CPU per 1,000 messages and its peak RSS. Larger payloads are sent fewer times
// (about the same bytes in each run above 200 B).
import { type PathResult, measureAedesIngest, measureFerry } from './e2e.ts';
import { benchKafka, benchTopic, createAppendTimeTopic, deleteTopics } from './kafka.ts';
import { ratio } from './stats.ts';

export const PAYLOAD_SIZES = [200, 2_048, 16_384] as const;

export interface PayloadRun {
  readonly payloadBytes: number;
  readonly messages: number;
  readonly ferry: PathResult;
  /** Payload megabytes (10^6 bytes) per second in Kafka. */
  readonly ferryMBPerSec: number;
  readonly aedesIngest: number;
  readonly vsAedesIngest: number;
}

export interface PayloadBenchResult {
  readonly runs: readonly PayloadRun[];
}

/** `messages` of 200 bytes; a larger payload gets messages × 200 × 8 / its size, at least 2,000 (16 KiB: 1/10 of the 200-byte count at the default). */
export function messagesFor(bytes: number, messages: number): number {
  return bytes <= 200 ? messages : Math.max(2_000, Math.round((messages * 200 * 8) / bytes / 100) * 100);
}

export async function benchPayloads(options: { readonly messages: number; readonly profileDir?: string; readonly log: (line: string) => void }): Promise<PayloadBenchResult> {
  const { log } = options;
  const kafka = await benchKafka(log);
  const topics: string[] = [];
  try {
    const runs: PayloadRun[] = [];
    for (const payloadBytes of PAYLOAD_SIZES) {
      const messages = messagesFor(payloadBytes, options.messages);
      const topic = benchTopic(`ferry-bench-payload-${payloadBytes}-`);
      topics.push(topic);
      await createAppendTimeTopic(kafka.brokers, topic);
      log(`  ${payloadBytes} bytes: plain aedes QoS 1 ingest, then the gateway to Kafka, ${messages} messages each...`);
      const aedesIngest = (await measureAedesIngest(messages, payloadBytes)).perSec;
      const profileDir = options.profileDir === undefined ? {} : { profileDir: `${options.profileDir}/${payloadBytes}` };
      const ferry = await measureFerry(kafka, topic, { messages, payloadBytes, log, ...profileDir });
      runs.push({
        payloadBytes,
        messages,
        ferry,
        ferryMBPerSec: Math.round((ferry.perSec * payloadBytes) / 1e5) / 10,
        aedesIngest,
        vsAedesIngest: ratio(ferry.perSec, aedesIngest),
      });
    }
    return { runs };
  } finally {
    await deleteTopics(kafka.brokers, topics).catch((error: unknown) => log(`  could not delete the bench topics: ${String(error)}`));
    await kafka.stop();
  }
}
