// Kafka answers a produce request partition by partition: it appends each partition's record
// batch or refuses it, independently of the others (ReplicaManager.appendToLocalLog), and a
// batch refused for what is in it (one record too large for the topic, say) is refused whole,
// nothing of it appended. kafkajs 2.2.4's produce response parse throws the first partition's
// error and drops the rest of the answer: a send it fails may have written every other
// partition's records, and a sink that sent them again wrote them twice (about 1.4 copies more
// per record of a batch of 100 over 3 partitions with one too large, halved down to it).
// For the requests whose messages carry SOURCE_RECORD (the sink's), the parse here lets a
// response through whose only errors are record refusals, each refused partition with its
// messages, so that the sink sends again what Kafka refused and nothing else. The same goes for
// a partition's retriable error (NOT_LEADER_OR_FOLLOWER after its leader moved, say) in the
// requests of Ferry's sendMessages without idempotence (send-messages.ts, which marks them): it
// sends that partition again alone, not those of the request Kafka appended, which kafkajs'
// retry wrote twice.
import { recordRefusalType } from './record-refusals.ts';

/** Set on each kafkajs message of a Ferry send: the record it was made from. */
export const SOURCE_RECORD = Symbol('ferry.sourceRecord');

/**
 * The `topicData` of the produce requests that Ferry's sendMessages sends for a producer without
 * idempotence: their response's retriable partition errors are handed on in `retriableError`
 * rather than thrown.
 */
export const RETRIED_PER_PARTITION = new WeakSet<object>();

interface PartitionAnswer {
  readonly partition: number;
  readonly errorCode: number;
  /** Added here to a refused partition: kafkajs' error for it, and the messages it refused. */
  refusal?: Error;
  refusedMessages?: readonly object[];
  /** Added here to a partition of a RETRIED_PER_PARTITION request that failed retriably: kafkajs' error for it. */
  retriableError?: Error;
}

interface ProduceAnswer {
  readonly topics: readonly { readonly topicName: string; readonly partitions: readonly PartitionAnswer[] }[];
}

interface ProduceArgs {
  readonly topicData?: readonly { readonly topic: string; readonly partitions: readonly { readonly partition: number; readonly messages: readonly object[] }[] }[];
}

interface ProduceResponse {
  parse(data: ProduceAnswer): Promise<unknown>;
}

type ProduceProtocol = (selected: { version: number | string }) => (args: ProduceArgs) => { request: unknown; response: ProduceResponse };

/**
 * kafkajs' Produce `protocol` (requests/produce/index.js), each request built as kafkajs builds
 * it. A Ferry request's response parse resolves when every partition Kafka failed refused its
 * records (see recordRefusalType), each such partition carrying `refusal` and `refusedMessages`
 * (kafkajs' sendBatch hands them on in its results); one of Ferry's sendMessages
 * (RETRIED_PER_PARTITION) also when others failed with a retriable error, each carrying
 * `retriableError`, for the send to retry those alone. Any other error throws as in kafkajs: the
 * first not handed on, so that kafkajs retries what it retries (Kafka drops for an idempotent
 * producer the partitions it had appended, sent again under the same numbers).
 */
export function returningRecordRefusals(protocol: ProduceProtocol, createErrorFromCode: (code: number) => Error): ProduceProtocol {
  return (selected) => {
    const build = protocol(selected);
    return (args) => {
      const built = build(args);
      const firstMessage = args.topicData?.[0]?.partitions[0]?.messages[0] as { [SOURCE_RECORD]?: unknown } | undefined;
      const refusals = firstMessage?.[SOURCE_RECORD] !== undefined;
      const retries = args.topicData !== undefined && RETRIED_PER_PARTITION.has(args.topicData);
      if (!refusals && !retries) return built;
      const { parse } = built.response;
      const lenient = async (data: ProduceAnswer): Promise<unknown> => {
        const failed = data.topics.flatMap(({ topicName, partitions }) => partitions.filter((p) => p.errorCode !== 0).map((answer) => ({ topicName, answer })));
        if (failed.length === 0) return parse(data);
        const errors = failed.map(({ answer }) => createErrorFromCode(answer.errorCode));
        // No refusal type is retriable (kafkajs' error codes): a refusal is never retried.
        const refused = (error: Error) => refusals && recordRefusalType(error) !== undefined;
        const retriable = (error: Error) => retries && (error as { retriable?: unknown }).retriable === true;
        const other = errors.find((error) => !refused(error) && !retriable(error));
        if (other !== undefined) throw other;
        const sent = failed.map(({ topicName, answer }) => args.topicData?.find((t) => t.topic === topicName)?.partitions.find((p) => p.partition === answer.partition)?.messages);
        // A partition answered that the request did not hold: nothing is known of it.
        if (sent.some((messages) => messages === undefined || messages.length === 0)) throw errors[0];
        failed.forEach(({ answer }, i) => {
          const error = errors[i] as Error;
          if (!refused(error)) {
            answer.retriableError = error;
            return;
          }
          answer.refusal = error;
          answer.refusedMessages = sent[i] as readonly object[];
        });
        return data;
      };
      return { ...built, response: { ...built.response, parse: lenient } };
    };
  };
}

/** What kafkajs' sendBatch resolves with, per partition. */
interface SentPartition {
  readonly topicName: string;
  readonly refusal?: Error;
  readonly refusedMessages?: readonly object[];
}

/** The partitions Kafka refused in sendBatch's `results`, by topic, each with its error and records, in their order. */
export function refusedPartitions<R>(results: readonly unknown[]): { readonly topic: string; readonly records: R[]; readonly error: Error }[] {
  const out: { readonly topic: string; readonly records: R[]; readonly error: Error }[] = [];
  for (const result of results as readonly SentPartition[]) {
    if (result.refusal === undefined) continue;
    const records = (result.refusedMessages ?? []).map((m) => (m as { [SOURCE_RECORD]: R })[SOURCE_RECORD]);
    out.push({ topic: result.topicName, records, error: result.refusal });
  }
  return out;
}
