import type { KafkaProducer, TopicRecords } from './client.ts';
import { steadyNow } from '../core/steady-clock.ts';

/**
 * Kafka's answers that refuse one topic rather than the request, with what each means to an
 * operator. kafkajs names no topic in them: all topics of a batch go in one request, and
 * kafkajs throws the first topic's error of a metadata or produce response.
 */
const REFUSALS = {
  // Retried by kafkajs with fresh metadata `retries` times before it reaches Ferry.
  UNKNOWN_TOPIC_OR_PARTITION:
    'the topic does not exist and the broker did not create it (auto.create.topics.enable is off, or the name collides with an existing topic\'s, "." and "_" being one to Kafka)',
  INVALID_TOPIC_EXCEPTION: 'the broker refuses the name',
  TOPIC_AUTHORIZATION_FAILED: 'this client is not authorized to write the topic',
} as const;

export type RefusalType = keyof typeof REFUSALS;

/** Kafka refused one topic: its records were not written. */
export interface TopicRefusal {
  readonly topic: string;
  readonly type: RefusalType;
  /** kafkajs' error, as the send threw it. */
  readonly error: Error;
  /** When Kafka refused it (steadyNow()). */
  readonly at: number;
  /** True when the refusal is an earlier send's, remembered: Kafka was not asked this time. */
  readonly remembered: boolean;
}

/** The refusal type in `error` or its causes (kafkajs wraps the last try's error), or undefined. */
export function refusalType(error: unknown): RefusalType | undefined {
  for (let e: unknown = error, depth = 0; e !== undefined && e !== null && depth < 5; depth++) {
    const type = (e as { type?: unknown }).type;
    if (typeof type === 'string' && Object.hasOwn(REFUSALS, type)) return type as RefusalType;
    e = (e as { originalError?: unknown }).originalError ?? (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/** Why Kafka refused the topic, for a dead letter's reason. */
export function describeRefusal(refusal: TopicRefusal, rememberMs: number, now = steadyNow()): string {
  const said = `Kafka refused topic '${refusal.topic}': ${REFUSALS[refusal.type]} (${refusal.type}: ${refusal.error.message})`;
  if (!refusal.remembered) return said;
  return `${said}; remembered from ${Math.round((now - refusal.at) / 1000)} s before (Kafka is asked again ${Math.round(rememberMs / 1000)} s after a refusal)`;
}

export interface TopicSenderOptions {
  /** How long a refused topic's records are refused without asking Kafka, in milliseconds. */
  readonly rememberMs: number;
  /** Most refused topics remembered (the oldest is forgotten first). */
  readonly maxRefused?: number;
  /** Most topics remembered as written (all are forgotten when full). */
  readonly maxWritten?: number;
  readonly now?: () => number;
}

/**
 * Writes a batch's topics for a sink whose topic comes from its messages, so that a topic Kafka
 * refuses (see REFUSALS) does not hold back the others: when a send fails with a refusal, the
 * topics are sent again apart (those written before in one request, each other one alone, at
 * once) until the refused ones are found, and the rest is written. Kafka is not asked about a
 * refused topic again for `rememberMs`: every send to it costs kafkajs' retries (about 9 s with
 * 5), and a device that goes on sending to it would slow its whole bridge down.
 *
 * Any other failure (a broker down, no leader, a timeout) rejects the whole send, as before:
 * some topics may then be written already, and are written again when the batch is retried.
 */
export class TopicSender {
  readonly #rememberMs: number;
  readonly #maxRefused: number;
  readonly #maxWritten: number;
  readonly #now: () => number;
  readonly #refused = new Map<string, TopicRefusal>();
  readonly #written = new Set<string>();

  constructor(options: TopicSenderOptions) {
    this.#rememberMs = options.rememberMs;
    this.#maxRefused = options.maxRefused ?? 1000;
    this.#maxWritten = options.maxWritten ?? 10_000;
    this.#now = options.now ?? steadyNow;
  }

  /**
   * Sends `batch` and resolves with the topics Kafka refused, whose records were not written
   * (every other topic's were); rejects when the batch failed otherwise.
   */
  async send(producer: KafkaProducer, batch: readonly TopicRecords[]): Promise<ReadonlyMap<string, TopicRefusal>> {
    const refusals = new Map<string, TopicRefusal>();
    const now = this.#now();
    const asked: TopicRecords[] = [];
    for (const topicRecords of batch) {
      const refusal = this.#refusalOf(topicRecords.topic, now);
      if (refusal === undefined) asked.push(topicRecords);
      else refusals.set(topicRecords.topic, { ...refusal, remembered: true });
    }
    if (asked.length > 0) await this.#sendApart(producer, asked, refusals);
    return refusals;
  }

  async #sendApart(producer: KafkaProducer, topics: readonly TopicRecords[], refusals: Map<string, TopicRefusal>): Promise<void> {
    try {
      await producer.send(topics);
    } catch (error) {
      const type = refusalType(error);
      if (type === undefined) throw error;
      if (topics.length === 1) {
        const topic = (topics[0] as TopicRecords).topic;
        const refusal: TopicRefusal = { topic, type, error: error as Error, at: this.#now(), remembered: false };
        this.#remember(refusal);
        refusals.set(topic, refusal);
        return;
      }
      // Which one? The topics written before are most likely not it: they go in one request.
      const known = topics.filter((t) => this.#written.has(t.topic));
      const parts = known.length > 0 && known.length < topics.length ? [known, ...topics.filter((t) => !this.#written.has(t.topic)).map((t) => [t])] : topics.map((t) => [t]);
      const settled = await Promise.allSettled(parts.map((part) => this.#sendApart(producer, part, refusals)));
      const failed = settled.find((s) => s.status === 'rejected');
      if (failed !== undefined) throw failed.reason;
      return;
    }
    if (this.#written.size + topics.length > this.#maxWritten) this.#written.clear();
    for (const { topic } of topics) this.#written.add(topic);
  }

  #refusalOf(topic: string, now: number): TopicRefusal | undefined {
    const refusal = this.#refused.get(topic);
    if (refusal === undefined || now - refusal.at < this.#rememberMs) return refusal;
    this.#refused.delete(topic);
    return undefined;
  }

  #remember(refusal: TopicRefusal): void {
    this.#refused.delete(refusal.topic);
    this.#refused.set(refusal.topic, refusal);
    this.#written.delete(refusal.topic);
    if (this.#refused.size > this.#maxRefused) this.#refused.delete(this.#refused.keys().next().value as string);
  }
}
