import { Subject, type Subscription } from 'rxjs';
import type { Logger } from 'pino';
import type { BridgeConfig } from '../config/schema.ts';
import type { ComponentContext, Counters } from '../core/component.ts';
import { type Delivery, fanOut } from '../core/delivery.ts';
import { FerryError } from '../core/errors.ts';
import type { Sink, SinkEvent, Source } from '../core/stream.ts';
import type { EmbeddedBroker } from '../mqtt/embedded-broker.ts';
import { mqttSource } from '../mqtt/source.ts';
import { findSink } from './registry.ts';

export interface BridgeStatus {
  readonly name: string;
  readonly file: string;
  readonly state: 'running' | 'stopped' | 'failed';
  readonly sinks: readonly { kind: string; written: number; failed: number; lastError?: string }[];
}

interface SinkState {
  readonly kind: string;
  readonly input: Subject<Delivery>;
  written: number;
  failed: number;
  lastError?: string;
}

/**
 * A running bridge: its source feeds every sink, and a message is acked to the source once
 * all sinks acked it. Stopping completes the sinks' inputs so they write what they hold.
 */
export class RunningBridge {
  readonly config: BridgeConfig;
  readonly #sinks: SinkState[] = [];
  readonly #subscriptions: Subscription[] = [];
  readonly #logger: Logger;
  #state: BridgeStatus['state'] = 'running';
  #pendingSinks = 0;
  #allDone: (() => void) | undefined;

  constructor(config: BridgeConfig, deps: { broker: EmbeddedBroker; logger: Logger; counters: Counters; dataDir: string }) {
    this.config = config;
    this.#logger = deps.logger.child({ bridge: config.name });
    const ctx: ComponentContext = { logger: this.#logger, counters: deps.counters, dataDir: deps.dataDir, bridge: config.name };
    const counters = deps.counters;

    for (const entry of config.to) {
      const [kind, sinkConfig] = Object.entries(entry)[0] as [string, unknown];
      const component = findSink(kind);
      if (component === undefined) throw new FerryError('CONFIG_INVALID', `bridge '${config.name}': unknown sink kind '${kind}'`);
      const state: SinkState = { kind, input: new Subject<Delivery>(), written: 0, failed: 0 };
      const sink: Sink = component.create(sinkConfig, { ...ctx, logger: this.#logger.child({ sink: kind }) });
      this.#pendingSinks += 1;
      this.#subscriptions.push(
        sink(state.input).subscribe({
          next: (event) => this.#onEvent(state, event, counters),
          error: (error: unknown) => {
            this.#state = 'failed';
            state.lastError = String(error);
            this.#logger.error({ err: error, sink: kind }, 'sink stopped with an error');
            this.#sinkDone();
          },
          complete: () => this.#sinkDone(),
        }),
      );
      this.#sinks.push(state);
    }

    const [sourceKind, sourceConfig] = Object.entries(config.from)[0] as [string, unknown];
    if (sourceKind !== mqttSource.kind) throw new FerryError('CONFIG_INVALID', `bridge '${config.name}': unknown source kind '${sourceKind}'`);
    const source: Source = mqttSource.create(sourceConfig as never, ctx, { broker: deps.broker });
    this.#subscriptions.push(
      source.subscribe({
        next: (delivery) => {
          counters.count('bridge.messages.in', { bridge: config.name });
          const parts = fanOut(delivery, this.#sinks.length);
          this.#sinks.forEach((s, i) => s.input.next(parts[i] as Delivery));
        },
        complete: () => this.stop(),
        error: (error: unknown) => {
          this.#logger.error({ err: error }, 'source failed');
          this.stop();
        },
      }),
    );
  }

  /** Completes the sinks' inputs; resolves when every sink wrote what it held. */
  stop(): Promise<void> {
    if (this.#state === 'running') this.#state = 'stopped';
    const done = new Promise<void>((resolve) => {
      if (this.#pendingSinks === 0) resolve();
      else this.#allDone = resolve;
    });
    for (const sink of this.#sinks) sink.input.complete();
    return done;
  }

  /** Tears everything down at once, without waiting for writes. */
  abort(): void {
    for (const subscription of this.#subscriptions) subscription.unsubscribe();
  }

  status(): BridgeStatus {
    return {
      name: this.config.name,
      file: this.config.file,
      state: this.#state,
      sinks: this.#sinks.map((s) => ({ kind: s.kind, written: s.written, failed: s.failed, ...(s.lastError === undefined ? {} : { lastError: s.lastError }) })),
    };
  }

  #onEvent(state: SinkState, event: SinkEvent, counters: Counters): void {
    const labels = { bridge: this.config.name, sink: state.kind };
    if (event.type === 'written') {
      state.written += event.count;
      counters.count('sink.messages.written', labels, event.count);
      return;
    }
    state.failed += event.count;
    state.lastError = event.error.message;
    counters.count('sink.messages.failed', labels, event.count);
    this.#logger.warn({ err: event.error, sink: state.kind, count: event.count }, 'sink write failed; messages not acknowledged');
  }

  #sinkDone(): void {
    this.#pendingSinks -= 1;
    if (this.#pendingSinks === 0) this.#allDone?.();
  }
}
