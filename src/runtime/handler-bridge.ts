import { Subject, concat, defer, from, ignoreElements, isObservable, type Subscription } from 'rxjs';
import type { Logger } from 'pino';
import type { HandlerBridgeConfig } from '../config/bridge-module.ts';
import type { ComponentContext, Counters } from '../core/component.ts';
import { createDelivery, type Delivery } from '../core/delivery.ts';
import type { Envelope } from '../core/envelope.ts';
import { FerryError, describeError } from '../core/errors.ts';
import type { SinkEvent } from '../core/stream.ts';
import { type StreamCursor, streamCursor } from '../buffer/stream-reader.ts';
import type { Message, Output } from '../handler/define.ts';
import { GcNudge } from '../handler/gc-nudge.ts';
import { InputTracker, type Ticket } from '../handler/input-tracker.ts';
import { type MessageContext, createMessage, createTools, culpritOf, isOutput, ticketOf } from '../handler/message.ts';
import { type BridgeDeps, type BridgeStatus, bridgeContext, sinkStatus, sourceFailed } from './bridge.ts';
import { BufferRegistration } from './buffer-registration.ts';
import { findSink, findSource } from './registry.ts';

/** The cursor name of a TypeScript bridge's handler in the buffer. */
export const HANDLER_CURSOR = 'handler';

interface SinkState {
  readonly name: string;
  readonly kind: string;
  readonly input: Subject<Delivery>;
  written: number;
  failed: number;
  lastError?: string;
}

/** One run of the handler's pipeline: `handle` was called once and its outputs are subscribed. */
interface Run {
  readonly input: Subject<Message>;
  subscription?: Subscription;
}

/**
 * A TypeScript bridge at work. Its source appends to the durable buffer as in a YAML bridge
 * (the device is acknowledged after the commit). Behind the buffer, one cursor hands the
 * messages to the handler's pipeline as `Message` objects; each output it emits goes to the
 * named sink. An input is acked when the pipeline let go of it (its object was garbage
 * collected, see InputTracker) and the sinks confirmed every output built from it.
 *
 * A failed output nacks its inputs, which the buffer delivers again after a backoff (or
 * dead-letters, when the sink says no retry can help). When the pipeline errors, the
 * inputs it held are nacked and `handle` is called again after a backoff; an input whose
 * payload made `json()` throw is dead-lettered instead, so one bad message cannot stop the
 * bridge.
 */
export class HandlerBridge {
  readonly config: HandlerBridgeConfig;
  readonly #logger: Logger;
  readonly #counters: Counters;
  readonly #sinks = new Map<string, SinkState>();
  readonly #subscriptions: Subscription[] = [];
  readonly #cursor: StreamCursor;
  readonly #tracker: InputTracker;
  readonly #nudge: GcNudge;
  readonly #context: MessageContext;
  #run: Run | undefined;
  /** Deliveries that came while no run was up (between a failure and its restart). */
  #queue: Delivery[] = [];
  #restartTimer: NodeJS.Timeout | undefined;
  #failures = 0;
  #restarts = 0;
  #lastError: string | undefined;
  #state: BridgeStatus['state'] = 'running';
  #stopping = false;
  /** Work components still do after they were unsubscribed (a Kafka source's last commit); stop waits for it. */
  readonly #afterStop: Promise<void>[] = [];
  readonly #registration: BufferRegistration;
  #pendingSinks = 0;
  #allDone: (() => void) | undefined;

  constructor(config: HandlerBridgeConfig, deps: BridgeDeps) {
    this.config = config;
    const { store, writer, counters } = deps;
    this.#counters = counters;
    this.#logger = deps.logger.child({ bridge: config.name });
    const runtime = { broker: deps.broker };

    const [sourceKind, sourceConfig] = Object.entries(config.from)[0] as [string, unknown];
    const sourceComponent = findSource(sourceKind);
    if (sourceComponent === undefined) throw new FerryError('CONFIG_INVALID', `bridge '${config.name}': unknown source kind '${sourceKind}'`);
    const ctx = bridgeContext(config, deps, this.#logger, sourceComponent.filters?.(sourceConfig as never) ?? [], this.#afterStop);
    this.#cursor = streamCursor({ store, writer, bridge: config.name, sink: HANDLER_CURSOR, policy: config.buffer, logger: this.#logger, counters });
    this.#nudge = new GcNudge({ held: () => this.#tracker.held, starved: () => this.#cursor.full });
    this.#tracker = new InputTracker({
      onSettle: (_ticket, outcome) => {
        this.#nudge.progress();
        if (outcome === 'acked') this.#failures = 0;
      },
      onRelease: () => this.#nudge.progress(),
    });
    const registration = new BufferRegistration(store, writer, config.name, [HANDLER_CURSOR], config.buffer);
    this.#registration = registration;
    try {
      for (const [name, entry] of Object.entries(config.to)) this.#startSink(name, entry, ctx, runtime);
      this.#context = {
        bridge: config.name,
        filters: ctx.sourceFilters ?? [],
        tools: createTools(config.name, [...this.#sinks.keys()]),
        reject: (ticket, error) => this.#reject(ticket, error),
      };

      this.#startRun();
      // A bridge replacing one of the same name (a reload) reads the buffer once the old one let go of its cursor.
      const input = deps.startAfter === undefined ? this.#cursor.deliveries : concat(from(deps.startAfter).pipe(ignoreElements()), this.#cursor.deliveries);
      this.#subscriptions.push(
        input.subscribe({
          next: (delivery) => this.#accept(delivery),
          error: (error: unknown) => {
            this.#state = 'failed';
            this.#lastError = describeError(error);
            this.#logger.error({ err: error }, 'reading the buffer failed; the handler gets no more messages until restart');
            this.#inputDone();
          },
          complete: () => this.#inputDone(),
        }),
      );
      const source = sourceComponent.create(sourceConfig as never, ctx, runtime);
      this.#subscriptions.unshift(
        source.subscribe({
          next: (delivery) => {
            counters.count('bridge.messages.in', { bridge: config.name });
            writer.enqueue(config.name, delivery);
          },
          // The source gave up (e.g. a TLS file it cannot read): no more messages; the gateway goes on.
          error: (error: unknown) => {
            this.#state = 'failed';
            this.#lastError = sourceFailed(config.name, error, this.#logger, counters);
          },
        }),
      );
    } catch (error) {
      // Built only in part: what started stops, and the buffer is left as it was found.
      this.discard();
      throw error;
    }
    // A new version of a running bridge takes over its cursors once the old one is retired.
    registration.commitAfter(deps.commitAfter ?? deps.startAfter, this.#logger);
  }

  /**
   * Stops taking messages: the pipeline's input completes (so windows emit what they hold),
   * and this resolves once the sinks wrote what it emitted. Inputs not acknowledged by then
   * stay buffered for the next start.
   */
  stop(): Promise<void> {
    if (this.#state === 'running') this.#state = 'stopped';
    this.#stopping = true;
    clearTimeout(this.#restartTimer);
    this.#subscriptions[0]?.unsubscribe();
    const done = new Promise<void>((resolve) => {
      if (this.#pendingSinks === 0) resolve();
      else this.#allDone = resolve;
    });
    this.#cursor.stop();
    return done.then(() => Promise.all(this.#afterStop)).then(
      () => this.#nudge.stop(),
      () => this.#nudge.stop(),
    );
  }

  /** Tears down a version that never took over (a refused reload) and takes back its buffer registration. */
  discard(): void {
    this.abort();
    this.#registration.discard();
  }

  /** Tears everything down at once, acknowledging nothing more. */
  abort(): void {
    this.#stopping = true;
    // First of all: nothing this bridge still holds may move the cursor now, since a bridge of
    // the same name may read it next (a reload) and the rows must stay for it.
    this.#tracker.close();
    this.#cursor.detach();
    clearTimeout(this.#restartTimer);
    this.#nudge.stop();
    this.#run?.subscription?.unsubscribe();
    this.#run = undefined;
    for (const subscription of this.#subscriptions) subscription.unsubscribe();
  }

  status(): BridgeStatus {
    return {
      name: this.config.name,
      file: this.config.file,
      state: this.#state,
      sinks: [...this.#sinks.values()].map(sinkStatus),
      handler: {
        unacked: this.#tracker.open + this.#queue.length,
        restarts: this.#restarts,
        ...(this.#lastError === undefined ? {} : { lastError: this.#lastError }),
      },
    };
  }

  #startSink(name: string, entry: Readonly<Record<string, unknown>>, ctx: ComponentContext, runtime: { broker: BridgeDeps['broker'] }): void {
    const [kind, sinkConfig] = Object.entries(entry)[0] as [string, unknown];
    const component = findSink(kind);
    if (component === undefined) throw new FerryError('CONFIG_INVALID', `bridge '${this.config.name}': unknown sink kind '${kind}'`);
    const logger = this.#logger.child({ sink: name });
    const state: SinkState = { name, kind, input: new Subject<Delivery>(), written: 0, failed: 0 };
    const sink = component.create(sinkConfig as never, { ...ctx, logger }, runtime);
    this.#pendingSinks += 1;
    this.#subscriptions.push(
      sink(state.input.asObservable()).subscribe({
        next: (event) => this.#onEvent(state, event),
        error: (error: unknown) => {
          this.#state = 'failed';
          state.lastError = String(error);
          this.#logger.error({ err: error, sink: name }, 'sink stopped with an error; the messages of its outputs stay buffered');
          this.#sinkDone();
        },
        complete: () => this.#sinkDone(),
      }),
    );
    this.#sinks.set(name, state);
  }

  #startRun(): void {
    const run: Run = { input: new Subject<Message>() };
    this.#run = run;
    const { handle } = this.config;
    const tools = this.#context.tools;
    const outputs = defer(() => {
      const out: unknown = handle(run.input.asObservable(), tools);
      if (!isObservable(out)) throw new FerryError('INTERNAL', `bridge '${this.config.name}': handle() returned ${describeValue(out)}, not an Observable of outputs`);
      return out;
    });
    run.subscription = outputs.subscribe({
      next: (output) => this.#route(run, output),
      error: (error: unknown) => this.#failed(run, error),
      complete: () => this.#completed(run),
    });
    // Messages that came while the pipeline was down, in order.
    while (this.#run === run && this.#queue.length > 0) run.input.next(this.#message(this.#queue.shift() as Delivery));
  }

  #accept(delivery: Delivery): void {
    if (this.#run === undefined) this.#queue.push(delivery);
    else this.#run.input.next(this.#message(delivery));
  }

  /** A new Message for the handler; only the tracker's registry knows it (weakly). */
  #message(delivery: Delivery): Message {
    return createMessage(delivery.envelope, this.#context, (message) => this.#tracker.track(delivery, message));
  }

  #route(run: Run, output: unknown): void {
    if (this.#run !== run) return;
    const sink = isOutput(output) ? this.#sinks.get(output.sink) : undefined;
    if (!isOutput(output) || sink === undefined) {
      run.subscription?.unsubscribe();
      const what = isOutput(output) ? `an output for '${output.sink}', which is not a sink of this bridge` : describeValue(output);
      this.#failed(run, new FerryError('INTERNAL', `bridge '${this.config.name}': the handler emitted ${what}; emit outputs built with tools.to(sink, from, ...)`));
      return;
    }
    const tickets: Ticket[] = [];
    for (const message of output.from) {
      const ticket = ticketOf(message);
      if (ticket !== undefined && !ticket.settled) tickets.push(ticket);
    }
    this.#tracker.hold(tickets);
    // The delivery keeps the tickets, not the output: its messages can be collected meanwhile.
    const { sink: name, from } = output;
    const fromNothing = from.length === 0;
    sink.input.next(
      createDelivery(toEnvelope(output, this.config.name), {
        onAck: () => this.#tracker.confirm(tickets),
        onNack: (error) => {
          if (fromNothing) {
            this.#counters.count('handler.outputs.lost', { bridge: this.config.name, sink: name });
            this.#logger.warn({ err: error, sink: name }, 'an output built from no message failed; it has no input to deliver again');
          }
          this.#tracker.fail(tickets, error);
        },
      }),
    );
  }

  #failed(run: Run, error: unknown): void {
    if (this.#run !== run) return;
    this.#run = undefined;
    this.#lastError = describeError(error);
    this.#counters.count('handler.errors', { bridge: this.config.name });
    const culprit = culpritOf(error);
    if (culprit !== undefined) {
      this.#counters.count('handler.rejected', { bridge: this.config.name });
      this.#tracker.reject(culprit, error as FerryError);
    }
    this.#tracker.failAll(new FerryError('INTERNAL', `the handler of bridge '${this.config.name}' failed: ${describeError(error)}`, { bridge: this.config.name, retryable: true, cause: error }));
    if (this.#stopping) {
      this.#logger.error({ err: error }, 'the handler failed while stopping; its messages stay buffered');
      this.#closeSinks();
      return;
    }
    this.#failures += 1;
    const { retryInitialMs, retryMaxMs } = this.config.buffer;
    const delay = Math.min(retryMaxMs, retryInitialMs * 2 ** Math.min(this.#failures - 1, 20));
    this.#logger.error({ err: error, restartInMs: delay, restarts: this.#restarts }, 'the handler failed; the messages it held will be delivered again when it restarts');
    this.#restartTimer = setTimeout(() => {
      if (this.#stopping) return;
      this.#restarts += 1;
      this.#counters.count('handler.restarts', { bridge: this.config.name });
      this.#startRun();
    }, delay);
  }

  #completed(run: Run): void {
    if (this.#run !== run) return;
    if (!this.#stopping) {
      this.#failed(run, new FerryError('INTERNAL', `bridge '${this.config.name}': the handler's observable completed while the bridge runs; it must go on as long as its input does`));
      return;
    }
    // The input completed and so did the pipeline: it holds nothing any more.
    this.#run = undefined;
    this.#tracker.releaseAll();
    this.#closeSinks();
  }

  #reject(ticket: Ticket, error: FerryError): void {
    this.#counters.count('handler.rejected', { bridge: this.config.name });
    this.#tracker.reject(ticket, error);
  }

  /** The cursor completed (the bridge stops): end the pipeline's input, then the sinks. */
  #inputDone(): void {
    if (this.#run !== undefined) this.#run.input.complete();
    else this.#closeSinks();
  }

  #closeSinks(): void {
    for (const sink of this.#sinks.values()) sink.input.complete();
  }

  #onEvent(state: SinkState, event: SinkEvent): void {
    const labels = { bridge: this.config.name, sink: state.name };
    if (event.type === 'written') {
      state.written += event.count;
      this.#counters.count('sink.messages.written', labels, event.count);
      return;
    }
    state.failed += event.count;
    state.lastError = event.error.message;
    this.#counters.count('sink.messages.failed', labels, event.count);
  }

  #sinkDone(): void {
    this.#pendingSinks -= 1;
    if (this.#pendingSinks === 0) this.#allDone?.();
  }
}

function toEnvelope(output: Output, bridge: string): Envelope {
  return {
    id: output.id,
    topic: output.topic,
    payload: output.payload,
    headers: output.headers,
    timestamp: output.timestamp,
    origin: { source: `handler:${bridge}`, ...(output.clientId === undefined ? {} : { clientId: output.clientId }) },
    ...(output.key === undefined ? {} : { key: output.key }),
  };
}

function describeValue(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  if (typeof value === 'object') return `an object (${Object.keys(value).slice(0, 5).join(', ') || 'no keys'})`;
  return `a ${typeof value}`;
}
