import { dirname, resolve } from 'node:path';
import { Subject, concat, from, ignoreElements, type Observable, type Subscription } from 'rxjs';
import type { Logger } from 'pino';
import type { BridgeConfig } from '../config/schema.ts';
import type { ComponentContext, Counters } from '../core/component.ts';
import { FerryError, describeError } from '../core/errors.ts';
import { type Delivery, fanOut } from '../core/delivery.ts';
import type { SinkEvent } from '../core/stream.ts';
import { type CursorSource, cursorSource } from '../buffer/reader.ts';
import type { BufferStore } from '../buffer/store.ts';
import type { BufferWriter } from '../buffer/writer.ts';
import type { EmbeddedBroker } from '../mqtt/embedded-broker.ts';
import { BufferRegistration } from './buffer-registration.ts';
import { ingressOperators } from './ingress.ts';
import { findSink, findSource } from './registry.ts';

export interface BridgeStatus {
  readonly name: string;
  readonly file: string;
  readonly state: 'running' | 'stopped' | 'failed';
  readonly sinks: readonly { name: string; kind: string; written: number; failed: number; lastError?: string }[];
  /** Why the bridge's source stopped, when it failed (the sinks go on delivering what is buffered). */
  readonly sourceError?: string;
  /** TypeScript bridges: what the handler holds and how often it was restarted. */
  readonly handler?: HandlerStatus;
}

export interface HandlerStatus {
  /** Input messages not acknowledged yet (held by the handler, or waiting for their outputs). */
  readonly unacked: number;
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
}

interface SinkState {
  readonly name: string;
  readonly kind: string;
  /** Where the sink's deliveries come from: its cursor on the buffer, or the source directly. */
  readonly input: CursorSource | Subject<Delivery>;
  written: number;
  failed: number;
  lastError?: string;
}

/**
 * What a bridge hands its components: its logger and counters, its source's topic filters, the
 * directory of its file, and `afterStop`, which collects the work its stop must wait for.
 */
export function bridgeContext(
  config: { readonly name: string; readonly file: string },
  deps: Pick<BridgeDeps, 'dataDir' | 'counters'>,
  logger: Logger,
  sourceFilters: readonly string[],
  afterStop: Promise<void>[],
): ComponentContext {
  return {
    logger,
    counters: deps.counters,
    dataDir: deps.dataDir,
    bridge: config.name,
    sourceFilters,
    configDir: dirname(resolve(config.file)),
    afterStop: (work) => afterStop.push(work.catch(() => {})),
  };
}

/** A bridge's source gave up (e.g. a TLS file it cannot read): counted and logged; returns the reason for its status. */
export function sourceFailed(bridge: string, error: unknown, logger: Logger, counters: Counters): string {
  counters.count('bridge.source.failed', { bridge });
  logger.error({ err: error }, 'the bridge\'s source failed and takes no more messages; fix the config and reload (what is buffered is still delivered)');
  return describeError(error);
}

/** A sink's line in a bridge's status. */
export function sinkStatus(s: { readonly name: string; readonly kind: string; readonly written: number; readonly failed: number; readonly lastError?: string | undefined }): BridgeStatus['sinks'][number] {
  return { name: s.name, kind: s.kind, written: s.written, failed: s.failed, ...(s.lastError === undefined ? {} : { lastError: s.lastError }) };
}

/** Names of a bridge's sinks in the buffer's cursors: the kind, or kind#index when a kind repeats. */
export function sinkNames(config: Pick<BridgeConfig, 'to'>): string[] {
  const kinds = config.to.map((entry) => Object.keys(entry)[0] as string);
  return kinds.map((kind, i) => (kinds.filter((k) => k === kind).length > 1 ? `${kind}#${i}` : kind));
}

/**
 * A running bridge: its source appends to the durable buffer (the device is acknowledged
 * after that commit), and each sink reads the bridge's log through its own cursor. Stopping
 * lets each sink finish the window it holds; what is left stays buffered for the next start.
 *
 * A source that keeps its messages itself until they are acked (`keepsMessages`, e.g. a Kafka
 * consumer committing offsets) skips the buffer: each delivery goes to every sink at once and
 * is acked upstream when all of them confirmed it.
 */
export class RunningBridge implements GatewayBridge {
  readonly config: BridgeConfig;
  readonly #sinks: SinkState[] = [];
  readonly #subscriptions: Subscription[] = [];
  readonly #logger: Logger;
  readonly #expiry: NodeJS.Timeout | undefined;
  #state: BridgeStatus['state'] = 'running';
  #sourceError: string | undefined;
  #pendingSinks = 0;
  #allDone: (() => void) | undefined;
  readonly #afterStop: Promise<void>[] = [];
  readonly #registration: BufferRegistration | undefined;

  constructor(config: BridgeConfig, deps: BridgeDeps) {
    this.config = config;
    const { store, writer, counters } = deps;
    this.#logger = deps.logger.child({ bridge: config.name });
    const runtime = { broker: deps.broker };

    const [sourceKind, sourceConfig] = Object.entries(config.from)[0] as [string, unknown];
    const sourceComponent = findSource(sourceKind);
    if (sourceComponent === undefined) throw new FerryError('CONFIG_INVALID', `bridge '${config.name}': unknown source kind '${sourceKind}'`);
    const sourceFilters = sourceComponent.filters?.(sourceConfig as never) ?? [];
    const ctx = bridgeContext(config, deps, this.#logger, sourceFilters, this.#afterStop);
    const buffered = sourceComponent.keepsMessages !== true;

    const names = sinkNames(config);
    const registration = buffered ? new BufferRegistration(store, writer, config.name, names, config.buffer) : undefined;
    this.#registration = registration;
    try {
      config.to.forEach((entry, i) => {
        const [kind, sinkConfig] = Object.entries(entry)[0] as [string, unknown];
        const component = findSink(kind);
        if (component === undefined) throw new FerryError('CONFIG_INVALID', `bridge '${config.name}': unknown sink kind '${kind}'`);
        const name = names[i] as string;
        const logger = this.#logger.child({ sink: name });
        const input = buffered
          ? cursorSource({ store, writer, bridge: config.name, sink: name, policy: config.buffer, logger, counters })
          : new Subject<Delivery>();
        const state: SinkState = { name, kind, input, written: 0, failed: 0 };
        const sink = component.create(sinkConfig as never, { ...ctx, logger }, runtime);
        const deliveries: Observable<Delivery> =
          input instanceof Subject
            ? input.asObservable()
            : deps.startAfter === undefined
              ? input.deliveries
              : concat(from(deps.startAfter).pipe(ignoreElements()), input.deliveries);
        this.#pendingSinks += 1;
        this.#subscriptions.push(
          sink(deliveries).subscribe({
            next: (event) => this.#onEvent(state, event, counters),
            error: (error: unknown) => {
              this.#state = 'failed';
              state.lastError = String(error);
              this.#logger.error({ err: error, sink: name }, buffered ? 'sink stopped with an error; its messages stay buffered' : 'sink stopped with an error');
              this.#sinkDone();
            },
            complete: () => this.#sinkDone(),
          }),
        );
        this.#sinks.push(state);
      });

      const source = sourceComponent.create(sourceConfig as never, ctx, runtime);
      const direct = this.#sinks.map((s) => s.input).filter((input): input is Subject<Delivery> => input instanceof Subject);
      // Rate limit and transform steps; a message they refuse is dead-lettered and acked there.
      const ingress = ingressOperators(config, { deadLetters: writer, logger: this.#logger, counters, sourceFilters });
      this.#subscriptions.unshift(
        source.pipe(ingress).subscribe({
          next: (delivery) => {
            counters.count('bridge.messages.in', { bridge: config.name });
            if (buffered) {
              writer.enqueue(config.name, delivery);
              return;
            }
            const copies = fanOut(delivery, direct.length);
            direct.forEach((subject, i) => subject.next(copies[i] as Delivery));
          },
          error: (error: unknown) => this.#sourceFailed(error, counters),
        }),
      );

      const { maxAgeMs } = config.buffer;
      if (buffered && maxAgeMs > 0) {
        this.#expiry = setInterval(() => {
          const removed = store.expire(config.name, Date.now() - maxAgeMs);
          if (removed.messages > 0) {
            counters.count('buffer.expired', { bridge: config.name }, removed.messages);
            this.#logger.warn({ expired: removed.messages, maxAgeMs }, 'removed messages older than maxAgeMs before they were delivered');
            writer.released();
          }
        }, Math.min(60_000, Math.max(100, Math.floor(maxAgeMs / 10))));
        this.#expiry.unref();
      }
    } catch (error) {
      this.discard();
      throw error;
    }
    // A new version of a running bridge takes over its cursors once the old one is retired.
    registration?.commitAfter(deps.commitAfter ?? deps.startAfter, this.#logger);
  }

  /** Stops taking messages; resolves when every sink settled the window it held and the source finished stopping. */
  stop(): Promise<void> {
    if (this.#state === 'running') this.#state = 'stopped';
    clearInterval(this.#expiry);
    this.#subscriptions[0]?.unsubscribe();
    const done = new Promise<void>((resolve) => {
      if (this.#pendingSinks === 0) resolve();
      else this.#allDone = resolve;
    });
    for (const sink of this.#sinks) {
      if (sink.input instanceof Subject) sink.input.complete();
      else sink.input.stop();
    }
    return done.then(() => Promise.all(this.#afterStop)).then(() => {});
  }

  /** Tears everything down at once, without waiting for writes. */
  abort(): void {
    clearInterval(this.#expiry);
    for (const subscription of this.#subscriptions) subscription.unsubscribe();
  }

  /** Tears down a version that never took over (a refused reload) and takes back its buffer registration. */
  discard(): void {
    this.abort();
    this.#registration?.discard();
  }

  status(): BridgeStatus {
    return {
      name: this.config.name,
      file: this.config.file,
      state: this.#state,
      sinks: this.#sinks.map(sinkStatus),
      ...(this.#sourceError === undefined ? {} : { sourceError: this.#sourceError }),
    };
  }

  /** The source gave up (e.g. a TLS file it cannot read): the bridge takes no more messages, the gateway goes on. */
  #sourceFailed(error: unknown, counters: Counters): void {
    this.#state = 'failed';
    this.#sourceError = sourceFailed(this.config.name, error, this.#logger, counters);
  }

  #onEvent(state: SinkState, event: SinkEvent, counters: Counters): void {
    const labels = { bridge: this.config.name, sink: state.name };
    if (event.type === 'written') {
      state.written += event.count;
      counters.count('sink.messages.written', labels, event.count);
      return;
    }
    state.failed += event.count;
    state.lastError = event.error.message;
    counters.count('sink.messages.failed', labels, event.count);
  }

  #sinkDone(): void {
    this.#pendingSinks -= 1;
    if (this.#pendingSinks === 0) this.#allDone?.();
  }
}
