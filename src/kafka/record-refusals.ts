import type { KafkaProducer, KafkaRecord, RefusedRecords, TopicRecords } from './client.ts';

/**
 * Kafka's answers that refuse a partition's record batch for what is in it, with what each
 * means to an operator. A batch is refused as a whole: one record too large for the topic's
 * max.message.bytes, or many that fit alone but not together, fail every record of their
 * partition, and kafkajs then throws for the whole request, the other partitions' records
 * written or not.
 */
const REFUSALS = {
  MESSAGE_TOO_LARGE: "the record is larger than the topic's max.message.bytes (or the broker's message.max.bytes), with its key, headers and overhead",
  RECORD_LIST_TOO_LARGE: "the record is larger than the topic's segment.bytes",
  INVALID_RECORD: 'the broker refuses the record (a record without a key on a compacted topic, say)',
  INVALID_TIMESTAMP: "the record's time is outside what the topic accepts (message.timestamp.before.max.ms, message.timestamp.after.max.ms)",
} as const;

export type RecordRefusalType = keyof typeof REFUSALS;

/** A record Kafka refused alone: no retry can write it. */
export interface RecordRefusal {
  readonly topic: string;
  readonly type: RecordRefusalType;
  /** kafkajs' error for the record sent alone. */
  readonly error: Error;
}

/** The record refusal type in `error` or its causes, or undefined. */
export function recordRefusalType(error: unknown): RecordRefusalType | undefined {
  for (let e: unknown = error, depth = 0; e !== undefined && e !== null && depth < 5; depth++) {
    const type = (e as { type?: unknown }).type;
    if (typeof type === 'string' && Object.hasOwn(REFUSALS, type)) return type as RecordRefusalType;
    e = (e as { originalError?: unknown }).originalError ?? (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/** Why Kafka refused the record, for a dead letter's reason. */
export function describeRecordRefusal(refusal: RecordRefusal, payloadBytes: number): string {
  return `Kafka refused the record (${payloadBytes} bytes of payload) for topic '${refusal.topic}' when sent alone: ${REFUSALS[refusal.type]} (${refusal.type}: ${refusal.error.message})`;
}

/**
 * A producer whose `send` finds the records Kafka refuses (see REFUSALS) rather than failing
 * the batch: the records of a partition Kafka refused (the producer's `send` resolves with
 * them, every other record of the send written) are sent again in halves, the first half
 * before the second (a partition's records keep their order), halved again while refused, down
 * to the records Kafka refuses alone. These are put in `refused`; every other record is
 * written, once. Nothing is added to a send Kafka takes. A refusal thrown for a whole send
 * (which partitions Kafka wrote unknown) has the whole batch halved so: the records Kafka had
 * appended of it are then written again, as after any retry.
 *
 * Any other failure rejects, as before; `refused` then means nothing (the batch is retried whole).
 */
export function findingRefusedRecords(producer: KafkaProducer, refused: Map<KafkaRecord, RecordRefusal>): KafkaProducer {
  const sendFinding = async (batch: readonly TopicRecords[]): Promise<readonly RefusedRecords[]> => {
    let parts: readonly { readonly batch: readonly TopicRecords[]; readonly error: unknown }[];
    try {
      parts = (await producer.send(batch)).map((part) => ({ batch: [part], error: part.error }));
    } catch (error) {
      if (recordRefusalType(error) === undefined) throw error;
      parts = [{ batch, error }];
    }
    for (const part of parts) {
      const type = recordRefusalType(part.error) as RecordRefusalType;
      const [first, second] = halves(part.batch);
      if (second.length === 0) {
        const { topic, records } = first[0] as TopicRecords;
        refused.set(records[0] as KafkaRecord, { topic, type, error: part.error as Error });
        continue;
      }
      await sendFinding(first);
      await sendFinding(second);
    }
    return [];
  };
  return { connect: () => producer.connect(), disconnect: () => producer.disconnect(), send: sendFinding };
}

/** The batch's records in two halves by count, in order, each grouped by topic as before; the second is empty for one record. */
export function halves(batch: readonly TopicRecords[]): [TopicRecords[], TopicRecords[]] {
  const total = batch.reduce((n, t) => n + t.records.length, 0);
  let left = Math.ceil(total / 2);
  const first: TopicRecords[] = [];
  const second: TopicRecords[] = [];
  for (const topicRecords of batch) {
    if (topicRecords.records.length === 0) continue;
    const taken = Math.min(left, topicRecords.records.length);
    left -= taken;
    if (taken > 0) first.push(taken === topicRecords.records.length ? topicRecords : { topic: topicRecords.topic, records: topicRecords.records.slice(0, taken) });
    if (taken < topicRecords.records.length) second.push({ topic: topicRecords.topic, records: topicRecords.records.slice(taken) });
  }
  return [first, second];
}
