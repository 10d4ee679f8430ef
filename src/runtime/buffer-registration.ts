import type { Logger } from 'pino';
import type { BufferPolicy } from '../buffer/config.ts';
import type { BufferStore } from '../buffer/store.ts';
import type { BufferWriter } from '../buffer/writer.ts';

/**
 * A bridge version's place in the buffer: its sinks' cursors and its buffer policy.
 *
 * A new version of a running bridge (a reload) is built while the old one still runs. It adds
 * the cursors it needs at once, but removes those of sinks it no longer has only when it takes
 * over (`commit`): until then the old version still reads them, and a cursor removed under it
 * would let the buffer delete messages that sink has not delivered. A version that never took
 * over (`discard`: its construction threw, or a reload was refused) takes back the cursors it
 * added and the policy it set, so a refused reload leaves the buffer as it found it.
 */
export class BufferRegistration {
  readonly #store: BufferStore;
  readonly #writer: BufferWriter;
  readonly #bridge: string;
  readonly #sinks: readonly string[];
  readonly #added: readonly string[];
  readonly #previousPolicy: BufferPolicy | undefined;
  #state: 'pending' | 'committed' | 'discarded' = 'pending';

  constructor(store: BufferStore, writer: BufferWriter, bridge: string, sinks: readonly string[], policy: BufferPolicy) {
    this.#store = store;
    this.#writer = writer;
    this.#bridge = bridge;
    this.#sinks = sinks;
    this.#previousPolicy = writer.policy(bridge);
    this.#added = store.addSinks(bridge, sinks);
    writer.setPolicy(bridge, policy);
  }

  /**
   * Commits once `after` settles (the old version retired, or every bridge of the reload was
   * built), or now without it. A failure later on is logged: the next start prunes anyway.
   */
  commitAfter(after: Promise<void> | undefined, logger: Logger): void {
    if (after === undefined) {
      this.commit();
      return;
    }
    void after
      .then(() => this.commit())
      .catch((error: unknown) => logger.warn({ err: error }, 'could not remove the cursors of sinks this bridge no longer has; the next start does'));
  }

  /** This version runs alone now: cursors of sinks it does not have go. */
  commit(): void {
    if (this.#state !== 'pending') return;
    this.#state = 'committed';
    this.#store.retainSinks(this.#bridge, this.#sinks);
  }

  /**
   * This version never ran for good (a brand-new bridge of a refused reload may have committed
   * already, having no old version to wait for): what it added goes, the previous policy comes back.
   */
  discard(): void {
    if (this.#state === 'discarded') return;
    this.#state = 'discarded';
    this.#store.removeSinks(this.#bridge, this.#added);
    if (this.#previousPolicy === undefined) this.#writer.removePolicy(this.#bridge);
    else this.#writer.setPolicy(this.#bridge, this.#previousPolicy);
  }
}
