/** Most topics whose answers are kept; all are forgotten when more come. */
const MAX_TOPICS = 10_000;

/**
 * Answers about topics, each worked out once and kept until `forget()`, or until MAX_TOPICS are
 * kept (then all are forgotten and kept afresh). A device publishes to the same few topics all
 * day: checking a topic (about 150 ns) and matching it against the bridges' filters (about as
 * much) were a tenth of what the gateway's main thread spends on a QoS 0 message, where looking
 * up a topic kept costs about 40 ns (the string's hash is computed once a message).
 */
export class TopicMemo<T> {
  readonly #answers = new Map<string, T>();
  readonly #answer: (topic: string) => T;

  constructor(answer: (topic: string) => T) {
    this.#answer = answer;
  }

  get(topic: string): T {
    let kept = this.#answers.get(topic);
    if (kept === undefined && !this.#answers.has(topic)) {
      kept = this.#answer(topic);
      if (this.#answers.size >= MAX_TOPICS) this.#answers.clear();
      this.#answers.set(topic, kept);
    }
    return kept as T;
  }

  /** Topics kept now. */
  get size(): number {
    return this.#answers.size;
  }

  /** Forgets every answer (what they were worked out from changed). */
  forget(): void {
    this.#answers.clear();
  }
}
