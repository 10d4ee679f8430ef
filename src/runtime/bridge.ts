import { Subject, concat, from, ignoreElements, type Observable, type Subscription } from 'rxjs';
import type { Logger } from 'pino';
import type { BridgeConfig } from '../config/schema.ts';
import type { Counters } from '../core/component.ts';
import { type Delivery, createDelivery, fanOut, settlesUpstream } from '../core/delivery.ts';
import { type CursorSource, cursorSource } from '../buffer/reader.ts';
import type { BufferStore } from '../buffer/store.ts';
import type { BufferWriter } from '../buffer/writer.ts';
import type { EmbeddedBroker } from '../mqtt/embedded-broker.ts';
import type { DatabaseLookup } from '../handler/message.ts';
import { type BridgeProblem, type SinkStatus, SinkSet, resolveSource, sourceStatus, takeFrom } from './bridge-parts.ts';
import { BufferRegistration } from './buffer-registration.ts';
import { ingressOperators } from './ingress.ts';

export interface BridgeStatus {
  readonly name: string;
  readonly file: string;
  /**
   * `failing`: a TypeScript bridge's handler fails again and again without progress;
   * `degraded`: it holds messages longer than its maxHoldMs.
   */
  readonly state: 'running' | 'degraded' | 'failing' | 'stopped' | 'failed';
  readonly sinks: readonly SinkStatus[];
  /** Why the bridge's source stopped, when it failed (the sinks go on delivering what is buffered). */
  readonly sourceError?: string;
  /** What the source reports of its upstream, when it does (an `mqttClient` source: its window, lag and the broker's drops). */
  readonly source?: Readonly<Record<string, unknown>>;
  /** TypeScript bridges: what the handler holds and how often it was restarted. */
  readonly handler?: HandlerStatus;
}

export interface HandlerStatus {
  /** Input messages not acknowledged yet (held by the handler, waiting for their outputs, or queued while it restarts). */
  readonly unacked: number;
  /** Input messages handed to the handler and not settled yet. */
  readonly held: number;
  /** Age of the oldest of them, in ms (0 when none). */
  readonly oldestHeldAgeMs: number;
  readonly restarts: number;
  readonly lastError?: string;
}

export interface BridgeDeps {
  readonly broker: EmbeddedBroker;
  readonly store: BufferStore;
  readonly writer: BufferWriter;
  readonly logger: Logger;
  readonly counters: Counters;
  readonly dataDir: string;
  /** The gateway's Gateway.onRestartNeeded, for components (ComponentContext.restartNeeded). */
  readonly restartNeeded?: (why: string) => void;
  /** The databases of gateway.yaml, for the `tools.database` of custom handlers. */
  readonly databases?: DatabaseLookup;
  /**
   * When set, the sinks start reading the buffer only once this settles: a reload replacing a
   * bridge of the same name passes the old bridge's end, so that the two never read the same
   * cursors at once. The source taps at once. Must not reject.
   */
  readonly startAfter?: Promise<void>;
  /**
   * When set, the bridge removes the cursors of sinks it does not have only once this settles
   * (else once `startAfter` does, else at once): a reload passes the moment every new bridge
   * was built, so that a refused reload finds the buffer as it was. Must not reject.
   */
  readonly commitAfter?: Promise<void>;
}

/**
 * What the gateway needs of a running bridge, whatever builds it: its name (and file, for
 * messages), a graceful stop, an immediate teardown and its status.
 */
export interface GatewayBridge {
  readonly config: { readonly name: string; readonly file: string };
  /** Stops taking messages; resolves when every sink settled the window it held. */
  stop(): Promise<void>;
  /** Tears everything down at once, without waiting for writes. */
  abort(): void;
  /**
   * Tears down a bridge that never took over from its previous version or started for good (a
   * reload refused because another bridge could not be built): it aborts and takes back what it
   * registered in the buffer, which the running version still uses.
   */
  discard(): void;
  status(): BridgeStatus;
  /** What keeps the bridge from delivering now (see BridgeProblem); empty when nothing does. */
  problems(now: number, stalledAfterMs: number): BridgeProblem[];
}

/** Names of a bridge's sinks in the buffer's cursors: the kind, or kind#index when a kind repeats. */
export function sinkNames(config: Pick<BridgeConfig, 'to'>): string[] {
  const kinds = config.to.map((entry) => Object.keys(entry)[0] as string);
  return kinds.map((kind, i) => (kinds.filter((k) => k === kind).length > 1 ? `${kind}#${i}` : kind));
}

/**
 * Where a YAML bridge's sinks get their messages from, and where its source's go. A buffered
 * bridge appends to the durable buffer and each sink reads its own cursor; a direct one (its
 * source keeps its messages until acked) hands each message to every sink at once.
 */
interface Feed {
  /** The deliveries for the sink `sink`. */
  input(sink: string): Observable<Delivery>;
  /** A message from the source, past the ingress steps. */
  take(delivery: Delivery): void;
  /** No more messages: each sink finishes what it was handed, then its input completes. */
  stop(): void;
  /** Since when the sink `sink` has held messages without settling them, when this feed can tell. */
  waitingSince(sink: string): number | undefined;
}

function bufferedFeed(config: BridgeConfig, deps: BridgeDeps, logger: Logger): Feed {
  const readers = new Map<string, CursorSource>();
  return {
    input: (sink) => {
      const reader = cursorSource({
        store: deps.store,
        writer: deps.writer,
        bridge: config.name,
        sink,
        policy: config.buffer,
        logger: logger.child({ sink }),
        counters: deps.counters,
      });
      readers.set(sink, reader);
      // A bridge replacing one of the same name reads once the old one let go of the cursors.
      return deps.startAfter === undefined ? reader.deliveries : concat(from(deps.startAfter).pipe(ignoreElements()), reader.deliveries);
    },
    take: (delivery) => deps.writer.enqueue(config.name, delivery),
    stop: () => {
      for (const reader of readers.values()) reader.stop();
    },
    waitingSince: (sink) => readers.get(sink)?.waitingSince,
  };
}

function directFeed(bridge: string, writer: BufferWriter): Feed {
  const subjects: Subject<Delivery>[] = [];
  return {
    input: () => {
      const subject = new Subject<Delivery>();
      subjects.push(subject);
      return subject.asObservable();
    },
    take: (received) => {
      // Unbuffered, a sampled message's span ends as it is handed to the sinks.
      const traced = writer.tracing?.ingress(bridge, received.envelope);
      traced?.end();
      const delivery = traced === undefined ? received : createDelivery(traced.envelope, settlesUpstream(received));
      const copies = fanOut(delivery, subjects.length);
      subjects.forEach((subject, i) => subject.next(copies[i] as Delivery));
    },
    stop: () => {
      for (const subject of subjects) subject.complete();
    },
    // Messages go straight to the sinks and are acked upstream as they settle: the source's own lag shows it.
    waitingSince: () => undefined,
  };
}

/**
 * A running YAML bridge: its source appends to the durable buffer (the device is acknowledged
 * after that commit), and each sink reads the bridge's log through its own cursor. Stopping
 * lets each sink finish the window it holds; what is left stays buffered for the next start.
 *
 * A source that keeps its messages itself until they are acked (`keepsMessages`, e.g. a Kafka
 * consumer committing offsets) skips the buffer: each delivery goes to every sink at once and
 * is acked upstream when all of them confirmed it.
 */
export class RunningBridge implements GatewayBridge {
  readonly config: BridgeConfig;
  readonly #sinks: SinkSet;
  readonly #feed: Feed;
  #source: Subscription | undefined;
  readonly #sourceStatus: () => Readonly<Record<string, unknown>> | undefined;
  readonly #logger: Logger;
  #sourceError: string | undefined;
  #stopped = false;
  readonly #afterStop: Promise<void>[] = [];
  readonly #registration: BufferRegistration;

  constructor(config: BridgeConfig, deps: BridgeDeps) {
    this.config = config;
    const { writer, counters } = deps;
    this.#logger = deps.logger.child({ bridge: config.name });
    const runtime = { broker: deps.broker };
    const source = resolveSource(config, deps, this.#logger, this.#afterStop, runtime);
    this.#sourceStatus = () => source.status();
    const buffered = !source.keepsMessages;
    if (config.buffer.overflow === 'refuse' && source.refuseCaveat !== undefined) {
      this.#logger.warn({ overflow: 'refuse' }, `buffer.overflow: refuse on a ${Object.keys(config.from)[0] ?? ''} source: ${source.refuseCaveat}`);
    }
    this.#feed = buffered ? bufferedFeed(config, deps, this.#logger) : directFeed(config.name, writer);
    this.#sinks = new SinkSet(config.name, this.#logger, counters, writer.tracing);

    const names = sinkNames(config);
    // A direct bridge has no cursors, but its dead letters (messages refused at ingress) are
    // kept within its policy like any bridge's.
    const registration = new BufferRegistration(deps.store, writer, config.name, buffered ? names : [], config.buffer);
    this.#registration = registration;
    try {
      config.to.forEach((entry, i) => {
        const name = names[i] as string;
        this.#sinks.add(name, entry, this.#feed.input(name), source.context, runtime, buffered ? 'its messages stay buffered' : 'its messages are not acknowledged upstream', () =>
          this.#feed.waitingSince(name),
        );
      });
      // Rate limit and transform steps; a message they refuse is dead-lettered and acked there.
      const ingress = ingressOperators(config, { deadLetters: writer, logger: this.#logger, counters, sourceFilters: source.context.sourceFilters ?? [] });
      this.#source = takeFrom(
        source.create().pipe(ingress),
        config.name,
        this.#logger,
        counters,
        (delivery) => this.#feed.take(delivery),
        (reason) => {
          this.#sourceError = reason;
        },
      );
    } catch (error) {
      this.discard();
      throw error;
    }
    // A new version of a running bridge takes over its cursors once the old one is retired.
    registration.commitAfter(deps.commitAfter ?? deps.startAfter, this.#logger);
  }

  /** Stops taking messages; resolves when every sink settled the window it held and the source finished stopping. */
  stop(): Promise<void> {
    this.#stopped = true;
    this.#source?.unsubscribe();
    const done = this.#sinks.done();
    this.#feed.stop();
    return done.then(() => Promise.all(this.#afterStop)).then(() => {});
  }

  /** Tears everything down at once, without waiting for writes. */
  abort(): void {
    this.#source?.unsubscribe();
    this.#sinks.abort();
  }

  /** Tears down a version that never took over (a refused reload) and takes back its buffer registration. */
  discard(): void {
    this.abort();
    this.#registration.discard();
  }

  problems(now: number, stalledAfterMs: number): BridgeProblem[] {
    const problems = this.#sinks.problems(now, stalledAfterMs);
    if (this.#sourceError !== undefined) problems.push({ bridge: this.config.name, problem: 'source_failed', detail: this.#sourceError });
    return problems;
  }

  status(): BridgeStatus {
    const failed = this.#sinks.failed || this.#sourceError !== undefined;
    return {
      name: this.config.name,
      file: this.config.file,
      state: failed ? 'failed' : this.#stopped ? 'stopped' : 'running',
      sinks: this.#sinks.status(),
      ...(this.#sourceError === undefined ? {} : { sourceError: this.#sourceError }),
      ...sourceStatus(this.#sourceStatus()),
    };
  }
}
