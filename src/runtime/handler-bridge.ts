import { Subject, concat, defer, from, ignoreElements, isObservable, type Subscription } from 'rxjs';
import type { Logger } from 'pino';
import type { HandlerBridgeConfig } from '../config/bridge-module.ts';
import type { Counters } from '../core/component.ts';
import { backoffDelay } from '../core/backoff.ts';
import type { Delivery } from '../core/delivery.ts';
import { type FerryError, describeError } from '../core/errors.ts';
import { type StreamCursor, streamCursor } from '../buffer/stream-reader.ts';
import type { Message } from '../handler/define.ts';
import { GcNudge } from '../handler/gc-nudge.ts';
import { InputTracker, type Ticket } from '../handler/input-tracker.ts';
import { type MessageContext, createMessage, createTools, culpritOf } from '../handler/message.ts';
import type { BridgeDeps, BridgeStatus } from './bridge.ts';
import { type BridgeProblem, SinkSet, resolveSource, sourceStatus, takeFrom } from './bridge-parts.ts';
import { BufferRegistration } from './buffer-registration.ts';
import { HoldWatch } from './hold-watch.ts';
import { HandlerRedis } from '../redis/handler-tools.ts';
import { OutputRouter, culpritError } from './output-router.ts';
import { completedWhileRunning, failedWhileStopping, notObservable } from './handler-faults.ts';

/** The cursor name of a TypeScript bridge's handler in the buffer. */
export const HANDLER_CURSOR = 'handler';

/** One run of the handler's pipeline: `handle` was called once and its outputs are subscribed. */
interface Run {
  readonly input: Subject<Message>;
  subscription?: Subscription;
  /**
   * Set after a failure that could not be pinned on a message: the held messages are handed
   * to this run one per event-loop turn, so that an error is pinned on the one handed last.
   */
  isolating: boolean;
}

/**
 * A TypeScript bridge at work. Its source appends to the durable buffer as in a YAML bridge
 * (the device is acknowledged after the commit). Behind the buffer, one cursor hands the
 * messages to the handler's pipeline as `Message` objects; each output it emits goes to the
 * named sink. When an input is acked is InputTracker's rule: its outputs are confirmed, or the
 * handler is done with it. Each input settles on its own, so a held one holds back nothing else.
 *
 * A failed output nacks its inputs, which the buffer delivers again after a backoff (or
 * dead-letters, when the sink says no retry can help). When the pipeline errors, the error is
 * pinned on the message being handed to it when it was thrown (or whose payload broke
 * `json()`): that message is dead-lettered with the error, and `handle` is called again at
 * once with the messages the old run held, in order; outputs the old run sent are not sent
 * again. An error that cannot be pinned that way restarts the pipeline handing the held
 * messages one per event-loop turn; a failure with no progress since the last one waits a
 * backoff first, and the bridge reports `failing` meanwhile.
 */
export class HandlerBridge {
  readonly config: HandlerBridgeConfig;
  readonly #logger: Logger;
  readonly #counters: Counters;
  readonly #sinks: SinkSet;
  readonly #inputs = new Map<string, Subject<Delivery>>();
  #source: Subscription | undefined;
  readonly #sourceStatus: () => Readonly<Record<string, unknown>> | undefined;
  #reading: Subscription | undefined;
  readonly #cursor: StreamCursor;
  readonly #tracker: InputTracker;
  readonly #nudge: GcNudge;
  readonly #hold: HoldWatch;
  readonly #router: OutputRouter;
  readonly #context: MessageContext;
  #run: Run | undefined;
  /** Deliveries that came while no run was up, or while one isolates, in order. */
  #queue: Delivery[] = [];
  /** The ticket being handed to the pipeline right now: an error thrown meanwhile is its. */
  #current: Ticket | undefined;
  #restartTimer: NodeJS.Timeout | undefined;
  /** Failures since the last acked input. */
  #failures = 0;
  #restarts = 0;
  #lastError: string | undefined;
  #sourceError: string | undefined;
  #readError: string | undefined;
  #stopping = false;
  /** Work components still do after they were unsubscribed (a Kafka source's last commit); stop waits for it. */
  readonly #afterStop: Promise<void>[] = [];
  readonly #registration: BufferRegistration;
  readonly #redis: HandlerRedis;

  constructor(config: HandlerBridgeConfig, deps: BridgeDeps) {
    this.config = config;
    const { store, writer, counters } = deps;
    this.#counters = counters;
    this.#logger = deps.logger.child({ bridge: config.name });
    const runtime = { broker: deps.broker };
    const source = resolveSource(config, deps, this.#logger, this.#afterStop, runtime);
    this.#sourceStatus = () => source.status();
    if (config.buffer.overflow === 'refuse' && source.refuseCaveat !== undefined) {
      this.#logger.warn({ overflow: 'refuse' }, `buffer.overflow: refuse on a ${Object.keys(config.from)[0] ?? ''} source: ${source.refuseCaveat}`);
    }
    this.#sinks = new SinkSet(config.name, this.#logger, counters, writer.tracing);
    this.#cursor = streamCursor({ store, writer, bridge: config.name, sink: HANDLER_CURSOR, policy: config.buffer, logger: this.#logger, counters });
    this.#tracker = new InputTracker({
      onSettle: (_ticket, outcome) => {
        this.#nudge.progress();
        if (outcome === 'acked') this.#failures = 0;
      },
      onRelease: () => this.#nudge.progress(),
    });
    // The last resort: only messages nothing settles but reachability wait for a collection.
    this.#nudge = new GcNudge({ held: () => this.#tracker.awaitingRelease, starved: () => this.#cursor.full });
    this.#hold = new HoldWatch(config, this.#tracker, this.#logger, counters);
    this.#router = new OutputRouter(config.name, this.#inputs, this.#tracker, this.#logger, counters);
    const registration = new BufferRegistration(store, writer, config.name, [HANDLER_CURSOR], config.buffer);
    this.#registration = registration;
    this.#redis = new HandlerRedis(config.name, config.redis);
    try {
      for (const [name, entry] of Object.entries(config.to)) {
        const input = new Subject<Delivery>();
        this.#inputs.set(name, input);
        this.#sinks.add(name, entry, input.asObservable(), source.context, runtime, 'the messages of its outputs stay buffered');
      }
      this.#context = {
        bridge: config.name,
        filters: source.context.sourceFilters ?? [],
        tools: createTools(config.name, this.#sinks.names, deps.databases, (name) => this.#redis.get(name)),
        reject: (ticket, error) => this.#reject(ticket, error),
        done: (ticket) => this.#tracker.done(ticket),
        keep: (ticket, message) => this.#tracker.keep(ticket, message),
      };

      this.#startRun(false);
      // A bridge replacing one of the same name (a reload) reads the buffer once the old one let go of its cursor.
      const input = deps.startAfter === undefined ? this.#cursor.deliveries : concat(from(deps.startAfter).pipe(ignoreElements()), this.#cursor.deliveries);
      this.#reading = input.subscribe({
        next: (delivery) => this.#accept(delivery),
        error: (error: unknown) => {
          this.#readError = describeError(error);
          this.#logger.error({ err: error }, 'reading the buffer failed; the handler gets no more messages until restart');
          this.#inputDone();
        },
        complete: () => this.#inputDone(),
      });
      const take = (delivery: Delivery) => writer.enqueue(config.name, delivery);
      this.#source = takeFrom(source.create(), config.name, this.#logger, counters, take, (reason) => {
        this.#sourceError = reason;
      });
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
    this.#stopping = true;
    clearTimeout(this.#restartTimer);
    this.#source?.unsubscribe();
    const done = this.#sinks.done();
    this.#cursor.stop();
    const finish = () => {
      this.#retire();
      this.#redis.close();
    };
    return done.then(() => Promise.all(this.#afterStop)).then(finish, finish);
  }

  /** Tears down a version that never took over (a refused reload) and takes back its buffer registration. */
  discard(): void {
    this.abort();
    this.#registration.discard();
  }

  /** Tears everything down at once, acknowledging nothing more. */
  abort(): void {
    this.#stopping = true;
    // First of all (see #retire): the rows must stay for the bridge that reads the cursor next.
    this.#retire();
    clearTimeout(this.#restartTimer);
    this.#run?.subscription?.unsubscribe();
    this.#run = undefined;
    this.#source?.unsubscribe();
    this.#reading?.unsubscribe();
    this.#sinks.abort();
    this.#redis.close();
  }

  /**
   * Nothing this version still holds (a failed run's messages, a module's cache) settles on the
   * cursor any more, whose rows stay for the next bridge of its name (a reload); timers stop.
   */
  #retire(): void {
    this.#tracker.close();
    this.#cursor.detach();
    this.#nudge.stop();
    this.#hold.stop();
  }

  problems(now: number, stalledAfterMs: number): BridgeProblem[] {
    const problems = this.#sinks.problems(now, stalledAfterMs);
    const { name } = this.config;
    if (this.#sourceError !== undefined) problems.push({ bridge: name, problem: 'source_failed', detail: this.#sourceError });
    if (this.#failures > 0) problems.push({ bridge: name, problem: 'failing', detail: `the handler failed ${this.#failures} time(s) without progress: ${this.#lastError ?? ''}` });
    const held = this.#hold.status();
    if (held.overdue > 0)
      problems.push({
        bridge: name,
        problem: 'held',
        detail: `${held.overdue} message(s) held longer than maxHoldMs (${this.config.maxHoldMs} ms)`,
        since: now - held.oldestAgeMs,
      });
    return problems;
  }

  status(): BridgeStatus {
    const held = this.#hold.status();
    const failed = this.#sinks.failed || this.#sourceError !== undefined || this.#readError !== undefined;
    const state: BridgeStatus['state'] = failed ? 'failed' : this.#stopping ? 'stopped' : this.#failures > 0 ? 'failing' : held.overdue > 0 ? 'degraded' : 'running';
    const lastError = this.#readError ?? this.#lastError;
    return {
      name: this.config.name,
      file: this.config.file,
      state,
      sinks: this.#sinks.status(),
      ...(this.#sourceError === undefined ? {} : { sourceError: this.#sourceError }),
      ...sourceStatus(this.#sourceStatus()),
      handler: {
        unacked: this.#tracker.open + this.#queue.length,
        held: held.count,
        oldestHeldAgeMs: held.oldestAgeMs,
        restarts: this.#restarts,
        ...(lastError === undefined ? {} : { lastError }),
      },
    };
  }

  #startRun(isolating: boolean): void {
    const run: Run = { input: new Subject<Message>(), isolating };
    this.#run = run;
    const { handle } = this.config;
    const tools = this.#context.tools;
    const outputs = defer(() => {
      const out: unknown = handle(run.input.asObservable(), tools);
      if (!isObservable(out)) throw notObservable(this.config.name, out);
      return out;
    });
    run.subscription = outputs.subscribe({
      next: (output) => this.#route(run, output),
      error: (error: unknown) => this.#failed(run, error),
      complete: () => this.#completed(run),
    });
    // The messages the previous run held, then those that came while no run was up, in order.
    const replay = [...this.#tracker.tickets()].filter((ticket) => !ticket.settled);
    if (isolating) {
      this.#isolate(run, replay);
      return;
    }
    for (const ticket of replay) {
      if (this.#run !== run) return;
      this.#hand(run, this.#tracker.retrack(ticket));
    }
    this.#drainQueue(run);
  }

  /** Hands `tickets` to `run` one per event-loop turn, then what queued meanwhile. */
  #isolate(run: Run, tickets: Ticket[]): void {
    const next = (index: number): void => {
      if (this.#run !== run || this.#stopping) return;
      const ticket = tickets[index];
      if (ticket === undefined) {
        run.isolating = false;
        this.#current = undefined;
        this.#drainQueue(run);
        return;
      }
      if (!ticket.settled) {
        this.#hand(run, this.#tracker.retrack(ticket));
        // Until the next turn, an error is this message's: what it started in this turn failed.
        if (this.#run === run) this.#current = ticket;
      }
      setImmediate(() => next(index + 1));
    };
    next(0);
  }

  #drainQueue(run: Run): void {
    while (this.#run === run && !run.isolating && this.#queue.length > 0) this.#hand(run, this.#tracker.track(this.#queue.shift() as Delivery));
  }

  #accept(delivery: Delivery): void {
    const run = this.#run;
    if (run === undefined || run.isolating) this.#queue.push(delivery);
    else this.#hand(run, this.#tracker.track(delivery));
  }

  /** Hands one message to the pipeline; an error thrown while it is handed is pinned on it. */
  #hand(run: Run, ticket: Ticket): void {
    const message = createMessage(ticket, this.#context);
    const previous = this.#current;
    this.#current = ticket;
    try {
      run.input.next(message);
    } finally {
      if (!run.isolating) this.#current = previous;
      this.#tracker.watch(ticket, message);
    }
  }

  #route(run: Run, output: unknown): void {
    if (this.#run !== run) return;
    const refused = this.#router.route(output);
    if (refused === undefined) return;
    run.subscription?.unsubscribe();
    this.#failed(run, refused);
  }

  /** `pinned`: whether the error may be the message's being handed (a completion is no message's). */
  #failed(run: Run, error: unknown, pinned = true): void {
    if (this.#run !== run) return;
    this.#run = undefined;
    run.subscription?.unsubscribe();
    this.#lastError = describeError(error);
    this.#counters.count('handler.errors', { bridge: this.config.name });
    const culprit = pinned ? (culpritOf(error) ?? this.#current) : undefined;
    this.#current = undefined;
    // What the failed run held waits for the next run: nothing of the dead one settles it now.
    this.#tracker.endRun();
    if (this.#stopping) {
      this.#logger.error({ err: error }, 'the handler failed while stopping; its messages stay buffered');
      this.#tracker.failAll(failedWhileStopping(this.config.name, error));
      this.#closeSinks();
      return;
    }
    if (culprit !== undefined && !culprit.settled) {
      this.#counters.count('handler.rejected', { bridge: this.config.name });
      this.#tracker.reject(culprit, culpritError(this.config.name, culprit, error));
      this.#logger.error(
        { err: error, id: culprit.delivery.envelope.id, topic: culprit.delivery.envelope.topic },
        'the handler failed on a message: moved it to the dead letters; restarting the handler at once with the messages it held',
      );
      this.#restart(false, 0);
      return;
    }
    this.#failures += 1;
    // A failure right after progress restarts at once; repeated ones without progress back off.
    const delay = this.#failures <= 1 ? 0 : backoffDelay({ initialMs: this.config.buffer.retryInitialMs, maxMs: this.config.buffer.retryMaxMs }, this.#failures - 1);
    this.#logger.error(
      { err: error, restartInMs: delay, restarts: this.#restarts, held: this.#tracker.open },
      pinned
        ? 'the handler failed and the error names no message: restarting it, handing the messages it held one at a time to find the one that fails'
        : 'the handler failed: restarting it with the messages it held',
    );
    this.#restart(pinned, delay);
  }

  #restart(isolating: boolean, delay: number): void {
    const start = () => {
      if (this.#stopping) return;
      this.#restarts += 1;
      this.#counters.count('handler.restarts', { bridge: this.config.name });
      this.#startRun(isolating);
    };
    this.#restartTimer = setTimeout(start, delay);
  }

  #completed(run: Run): void {
    if (this.#run !== run) return;
    if (!this.#stopping) {
      this.#failed(run, completedWhileRunning(this.config.name), false);
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
    for (const input of this.#inputs.values()) input.complete();
  }
}
