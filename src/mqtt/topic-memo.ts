/** Most topics whose answers are kept; all are forgotten when more come. */
const MAX_TOPICS = 10_000;
/**
 * Most characters of those topics in all: a topic may be as long as a packet (an invalid one is
 * answered too), and the memo must not keep megabytes of them.
 */
const MAX_CHARS = 1_000_000;
/** What is kept for an undefined answer, so that a valid topic takes one lookup, not two. */
const NONE = Symbol('none');

/**
 * Answers about topics, each worked out once and kept until `forget()`, or until MAX_TOPICS or
 * MAX_CHARS are kept (then all are forgotten and kept afresh). A device publishes to the same few
 * topics all day: checking a topic (about 150 ns) and matching it against the bridges' filters
 * (about as much) were a tenth of what the gateway's main thread spends on a QoS 0 message, where
 * looking up a topic kept costs about 40 ns (the string's hash is computed once a message).
 */
export class TopicMemo<T> {
  readonly #answers = new Map<string, T | typeof NONE>();
  readonly #answer: (topic: string) => T;
  #chars = 0;

  constructor(answer: (topic: string) => T) {
    this.#answer = answer;
  }

  get(topic: string): T {
    const kept = this.#answers.get(topic);
    if (kept !== undefined) return kept === NONE ? (undefined as T) : kept;
    const answer = this.#answer(topic);
    if (this.#answers.size >= MAX_TOPICS || this.#chars + topic.length > MAX_CHARS) this.forget();
    this.#answers.set(topic, answer === undefined ? NONE : answer);
    this.#chars += topic.length;
    return answer;
  }

  /** Topics kept now. */
  get size(): number {
    return this.#answers.size;
  }

  /** Forgets every answer (what they were worked out from changed). */
  forget(): void {
    this.#answers.clear();
    this.#chars = 0;
  }
}
