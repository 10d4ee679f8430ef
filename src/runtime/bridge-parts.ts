import { dirname, resolve } from 'node:path';
import type { Observable, Subscription } from 'rxjs';
import type { Logger } from 'pino';
import type { ComponentContext, Counters, HistogramSeries } from '../core/component.ts';
import { type MessageTracing, spanFields } from '../core/tracing.ts';
import type { Delivery } from '../core/delivery.ts';
import { FerryError, describeError } from '../core/errors.ts';
import type { SinkEvent, Source } from '../core/stream.ts';
import { type RuntimeDeps, findSink, findSource } from './registry.ts';
import { steadyMsSince, steadyNow } from '../core/steady-clock.ts';

/** A sink's line in a bridge's status. */
export interface SinkStatus {
  readonly name: string;
  readonly kind: string;
  readonly written: number;
  readonly failed: number;
  /** The failure going on: set by a failed write (or the sink stopping), cleared by the next write that succeeds. */
  readonly lastError?: string;
  /** The latest failure and when (ms since the epoch), kept after the sink writes again. */
  readonly lastFailure?: { readonly error: string; readonly at: number };
}

/** What the skeleton needs of a bridge's config: its name and file (for messages and paths). */
export interface BridgeIdentity {
  readonly name: string;
  readonly file: string;
}

/** What the gateway gives every component of a bridge. */
export interface ContextDeps {
  readonly dataDir: string;
  readonly counters: Counters;
  readonly restartNeeded?: (why: string) => void;
}

/**
 * What a bridge hands its components: its logger and counters, its source's topic filters, the
 * directory of its file, and `afterStop`, which collects the work its stop must wait for.
 */
function bridgeContext(
  config: BridgeIdentity,
  deps: ContextDeps,
  logger: Logger,
  sourceFilters: readonly string[],
  afterStop: Promise<void>[],
  reportStatus: (read: () => Readonly<Record<string, unknown>>) => void,
): ComponentContext {
  return {
    logger,
    counters: deps.counters,
    dataDir: deps.dataDir,
    bridge: config.name,
    sourceFilters,
    configDir: dirname(resolve(config.file)),
    afterStop: (work) => afterStop.push(work.catch(() => {})),
    reportStatus,
    ...(deps.restartNeeded === undefined ? {} : { restartNeeded: deps.restartNeeded }),
  };
}

/** A bridge's source component, resolved from its `from` entry, and the context its parts share. */
export interface ResolvedSource {
  /** Whether the source keeps its messages until acked (a Kafka consumer): it then skips the buffer. */
  readonly keepsMessages: boolean;
  /** What `overflow: refuse` means for this source, when more than "its messages wait at the sender". */
  readonly refuseCaveat?: string;
  readonly context: ComponentContext;
  /** Creates the source (call once the sinks are in place). */
  create(): Source;
  /** What the source reports of its upstream (see ComponentContext.reportStatus); undefined when it reports nothing. */
  status(): Readonly<Record<string, unknown>> | undefined;
}

/** Looks up a bridge's source kind and builds the context of its components; throws for an unknown kind. */
export function resolveSource(
  config: BridgeIdentity & { readonly from: Readonly<Record<string, unknown>> },
  deps: ContextDeps,
  logger: Logger,
  afterStop: Promise<void>[],
  runtime: RuntimeDeps,
): ResolvedSource {
  const [kind, sourceConfig] = Object.entries(config.from)[0] as [string, unknown];
  const component = findSource(kind);
  if (component === undefined) throw new FerryError('CONFIG_INVALID', `bridge '${config.name}': unknown source kind '${kind}'`);
  let read: (() => Readonly<Record<string, unknown>>) | undefined;
  const context = bridgeContext(config, deps, logger, component.filters?.(sourceConfig) ?? [], afterStop, (reader) => {
    read = reader;
  });
  return {
    keepsMessages: component.keepsMessages === true,
    ...(component.refuseCaveat === undefined ? {} : { refuseCaveat: component.refuseCaveat }),
    context,
    create: () => component.create(sourceConfig, context, runtime),
    status: () => read?.(),
  };
}

/** The `source` field of a bridge's status: present only when the source reports something. */
export function sourceStatus(status: Readonly<Record<string, unknown>> | undefined): { source?: Readonly<Record<string, unknown>> } {
  return status === undefined ? {} : { source: status };
}

/**
 * Reads a bridge's source: each message is counted in `bridge.messages.in` and given to
 * `take`. A source that gives up (e.g. a TLS file it cannot read) is counted and logged, and
 * `failed` gets the reason for the bridge's status: no more messages, the gateway goes on.
 */
export function takeFrom(
  source: Observable<Delivery>,
  bridge: string,
  logger: Logger,
  counters: Counters,
  take: (delivery: Delivery) => void,
  failed: (reason: string) => void,
): Subscription {
  // One labels object for every message: the counters keep its key.
  const labels = { bridge };
  return source.subscribe({
    next: (delivery) => {
      counters.count('bridge.messages.in', labels);
      take(delivery);
    },
    error: (error: unknown) => {
      counters.count('bridge.source.failed', labels);
      logger.error({ err: error }, "the bridge's source failed and takes no more messages; fix the config and reload (what is buffered is still delivered)");
      failed(describeError(error));
    },
  });
}

/** A failure of the sink: its error is the current one, and the latest with its time. */
function failedWith(state: SinkState, error: string): void {
  state.lastError = error;
  state.lastFailure = { error, at: Date.now() };
}

interface SinkState {
  readonly name: string;
  readonly kind: string;
  written: number;
  failed: number;
  lastError?: string;
  lastFailure?: { readonly error: string; readonly at: number };
  /** Set from a failed batch until a batch is written again: the upstream is down (since: steadyNow()). */
  down?: { readonly since: number; attempts: number };
  /** Since when the sink holds messages without an answer, when its input can tell. */
  readonly waitingSince: () => number | undefined;
  /** `sink.write_seconds` of this sink. */
  readonly writes: HistogramSeries | undefined;
  /** Its counters' labels: one object, whose key the counters keep. */
  readonly labels: Readonly<Record<string, string>>;
}

/** Something that keeps a bridge from delivering, for readiness and status. */
export interface BridgeProblem {
  readonly bridge: string;
  readonly sink?: string;
  /**
   * `down`: the sink's last write failed; `stalled`: it holds messages without an answer
   * (a hung upstream); `backlog`: its oldest undelivered message is older than allowed;
   * `held`: the handler holds messages past maxHoldMs; `failing`: the handler fails again and
   * again; `source_failed`: the source stopped.
   */
  readonly problem: 'down' | 'stalled' | 'backlog' | 'held' | 'failing' | 'source_failed';
  readonly detail: string;
  /** Since when (ms since the epoch), where known. */
  readonly since?: number;
}

/**
 * The sinks of a bridge, whatever feeds them: each is created from its `{ kind: config }`
 * entry, subscribed to its input, and its events counted (`sink.messages.written` and
 * `.failed`) and kept for the status. `done` resolves once every sink completed or failed.
 */
export class SinkSet {
  readonly #bridge: string;
  readonly #logger: Logger;
  readonly #counters: Counters;
  readonly #states: SinkState[] = [];
  readonly #subscriptions: Subscription[] = [];
  #pending = 0;
  #allDone: (() => void) | undefined;
  /** Set when a sink stopped with an error: the bridge reports `failed`. */
  failed = false;

  readonly #tracing: MessageTracing | undefined;

  constructor(bridge: string, logger: Logger, counters: Counters, tracing?: MessageTracing) {
    this.#tracing = tracing;
    this.#bridge = bridge;
    this.#logger = logger;
    this.#counters = counters;
  }

  /**
   * Creates the sink `name` from its entry and subscribes it to `input`. `onError` says what
   * happens to the messages of a sink that stopped with an error (for the log line).
   */
  add(
    name: string,
    entry: Readonly<Record<string, unknown>>,
    input: Observable<Delivery>,
    context: ComponentContext,
    runtime: RuntimeDeps,
    onError: string,
    waitingSince: () => number | undefined = () => undefined,
  ): void {
    const [kind, sinkConfig] = Object.entries(entry)[0] as [string, unknown];
    const component = findSink(kind);
    if (component === undefined) throw new FerryError('CONFIG_INVALID', `bridge '${this.#bridge}': unknown sink kind '${kind}'`);
    const labels = { bridge: this.#bridge, sink: name };
    const state: SinkState = { name, kind, written: 0, failed: 0, waitingSince, writes: this.#counters.histogram?.('sink.write_seconds', labels), labels };
    const tracing = this.#tracing?.sink(this.#bridge, name);
    const sink = component.create(sinkConfig, { ...context, logger: this.#logger.child({ sink: name }), ...(tracing === undefined ? {} : { tracing }) }, runtime);
    this.#pending += 1;
    this.#states.push(state);
    this.#subscriptions.push(
      sink(input).subscribe({
        next: (event) => this.#onEvent(state, event),
        error: (error: unknown) => {
          this.failed = true;
          failedWith(state, String(error));
          this.#logger.error({ err: error, sink: name }, `sink stopped with an error; ${onError}`);
          this.#sinkDone();
        },
        complete: () => this.#sinkDone(),
      }),
    );
  }

  get names(): string[] {
    return this.#states.map((s) => s.name);
  }

  /** Resolves once every sink completed or failed. */
  done(): Promise<void> {
    return new Promise<void>((resolve) => {
      if (this.#pending === 0) resolve();
      else this.#allDone = resolve;
    });
  }

  /** Unsubscribes every sink at once, without waiting for writes. */
  abort(): void {
    for (const subscription of this.#subscriptions) subscription.unsubscribe();
  }

  /** Sinks that are down, or that have held messages without an answer for `stalledAfterMs` (`now`: the wall clock, for `since`). */
  problems(now: number, stalledAfterMs: number): BridgeProblem[] {
    const out: BridgeProblem[] = [];
    for (const s of this.#states) {
      if (s.down !== undefined) {
        out.push({
          bridge: this.#bridge,
          sink: s.name,
          problem: 'down',
          detail: `${s.down.attempts} failed attempt(s): ${s.lastError ?? 'unknown error'}`,
          since: now - steadyMsSince(s.down.since),
        });
        continue;
      }
      // Waited by the steady clock (a step of the wall clock neither stalls nor hides a sink); `since` by the wall clock.
      const waiting = s.waitingSince();
      const waited = waiting === undefined ? 0 : steadyMsSince(waiting);
      if (waiting !== undefined && waited >= stalledAfterMs) {
        out.push({ bridge: this.#bridge, sink: s.name, problem: 'stalled', detail: `no answer from ${s.kind} for ${Math.round(waited / 1000)} s`, since: now - waited });
      }
    }
    return out;
  }

  status(): SinkStatus[] {
    return this.#states.map((s) => ({
      name: s.name,
      kind: s.kind,
      written: s.written,
      failed: s.failed,
      ...(s.lastError === undefined ? {} : { lastError: s.lastError }),
      ...(s.lastFailure === undefined ? {} : { lastFailure: s.lastFailure }),
    }));
  }

  #onEvent(state: SinkState, event: SinkEvent): void {
    const { labels } = state;
    if (event.type === 'written') {
      state.written += event.count;
      this.#counters.count('sink.messages.written', labels, event.count);
      state.writes?.record(event.durationMs / 1000);
      // Past: an error still shown as `lastError` would read as the sink's trouble now (lastFailure keeps it).
      delete state.lastError;
      if (state.down !== undefined) {
        this.#logger.info(
          { sink: state.name, downForMs: steadyMsSince(state.down.since), attempts: state.down.attempts, ...spanFields(event.span) },
          `sink '${state.name}' writes again after ${Math.round(steadyMsSince(state.down.since) / 1000)} s down`,
        );
        delete state.down;
      }
      return;
    }
    state.failed += event.count;
    failedWith(state, event.error.message);
    this.#counters.count('sink.messages.failed', labels, event.count);
    // A message refused for good (dead-lettered) says nothing of the upstream: it is up.
    if (!event.retryable) return;
    if (state.down !== undefined) {
      state.down.attempts += 1;
      return;
    }
    // Logged once per outage (the reader logs its retries at most once per failure streak too).
    state.down = { since: steadyNow(), attempts: 1 };
    this.#counters.count('sink.outages', labels);
    this.#logger.warn(
      { sink: state.name, err: event.error, ...spanFields(event.span) },
      `sink '${state.name}' is down (${event.error.message}): its messages stay buffered and are retried with backoff`,
    );
  }

  #sinkDone(): void {
    this.#pending -= 1;
    if (this.#pending === 0) this.#allDone?.();
  }
}
