import type { Kysely } from 'kysely';
import type { Observable } from 'rxjs';
import type { BufferPolicy } from '../buffer/config.ts';
import type { RedisTools } from '../redis/handler-tools.ts';
import type { SinkSpec, SourceSpec } from './specs.ts';

/**
 * One device message, as a handler sees it: a read-only view of a message in the bridge's
 * durable buffer.
 *
 * Ferry acks (settles) a message once every output built from it is confirmed by its sink
 * and either an output built from it was confirmed (a mapped or enriched message, a window's
 * aggregate) and you did not `keep()` it, or you are done with it: you called `done()`, dropped it with `filterMessages`,
 * or, as a last resort, your code no longer references it at all (the garbage collector
 * finds it). A message settles on its own: one you keep (the last reading of a quiet device)
 * holds back nothing but itself, shows in the bridge's status as held with its age, and is
 * handled by the bridge's `maxHoldMs` policy once it is held too long.
 */
export interface Message<T = unknown> {
  /** Stable id (a UUIDv7 given at ingress, or made from a Kafka record or an outbox row); the same when the message is delivered again. */
  readonly id: string;
  /** The MQTT topic it was published to. */
  readonly topic: string;
  /** Client id of the publishing device. */
  readonly clientId: string | undefined;
  /** Username the device logged in with. */
  readonly username: string | undefined;
  /** Milliseconds since the epoch, when Ferry received it. */
  readonly timestamp: number;
  readonly key: string | undefined;
  /** MQTT 5 user properties, trace context. */
  readonly headers: Readonly<Record<string, string>>;
  /**
   * The topic levels matched by the `+` wildcards of the first `from` filter that matches
   * the topic: `captures[0]` is what YAML templates call `${1}`. For `devices/+/telemetry/#`
   * and topic `devices/s-1/telemetry/climate`, `captures` is `['s-1']`.
   */
  readonly captures: readonly string[];
  /** The levels matched by the filter's trailing `#`, joined by `/` (`${#}`); undefined without one. */
  readonly rest: string | undefined;
  /** The payload bytes. Treat them as read-only: they are the buffer's copy. */
  readonly payload: Uint8Array;
  /** The payload as UTF-8 text. */
  text(): string;
  /**
   * The payload parsed as JSON (parsed once, then cached; the same object is returned each
   * time, so do not change it). A payload that is not JSON throws an error that fails the
   * pipeline; Ferry then moves this message to the dead letters and restarts the pipeline.
   */
  json<U = T>(): U;
  /** Shorthand for `tools.to(sink, this, init)`. */
  to(sink: string, init?: OutputInit): Output;
  /**
   * You are done with this message and will build no more outputs from it: it is acked once
   * the outputs already built from it are confirmed, at once when there are none. Call it
   * for a message you drop, or one you replace in a cache (the previous reading of a device).
   */
  done(): void;
  /**
   * You keep this message to build more outputs from it later (the previous reading of a
   * device, a sliding window): a confirmed output built from it no longer settles it; call
   * `done()` when you let it go. Without `keep()`, a later output built from a message that
   * has settled is still sent, but counted (`handler.outputs.after_settle`) and warned about:
   * a crash before it is written would lose it. Returns the message.
   */
  keep(): this;
  /**
   * Refuses the message for good: it is moved to the bridge's dead letters with `reason`
   * (see `ferry buffer export --dead-letters`) and counted, whatever outputs were built from it.
   */
  reject(reason: string): void;
}

/** What one output carries. Everything but `payload`/`json` defaults from a single `from` message. */
export interface OutputInit {
  /** Bytes or text; with neither `payload` nor `json`, the `from` message's payload (one message only). */
  readonly payload?: Uint8Array | string;
  /** A value written as JSON text, instead of `payload`. */
  readonly json?: unknown;
  /** Message key (the Kafka record key); by default the `from` message's key, else the device's client id (see `Output.clientId`). */
  readonly key?: string;
  /** Topic the output carries (the `mqtt-topic` header in Kafka, the topic in the history); by default the first `from` message's topic. */
  readonly topic?: string;
  /** Headers (Kafka headers); by default the `from` message's. */
  readonly headers?: Readonly<Record<string, string>>;
  /**
   * Id of the output (the `ferry-id` Kafka header, for de-duplication upstream). A message
   * passed on unchanged keeps its id; any other output gets a new one unless you give one.
   */
  readonly id?: string;
  /** Milliseconds since the epoch; now by default. */
  readonly timestamp?: number;
}

/**
 * A message for one of the bridge's sinks (a `to` entry), built by `tools.to` or
 * `message.to`. It keeps its `from` messages alive until Ferry takes it; their acks then
 * wait for the sink to confirm it.
 */
export interface Output<S extends string = string> {
  readonly sink: S;
  readonly from: readonly Message[];
  readonly id: string;
  readonly topic: string;
  readonly payload: Uint8Array;
  readonly key: string | undefined;
  /** The device the output is about: the client id the `from` messages share, if they share one. */
  readonly clientId: string | undefined;
  readonly headers: Readonly<Record<string, string>>;
  readonly timestamp: number;
}

/** Helpers handed to `handle`. */
export interface BridgeTools<S extends string = string> {
  /** The bridge's name. */
  readonly bridge: string;
  /**
   * Builds an output for the sink named `sink` (a key of `to`) from one message or many
   * (an aggregate), or from none (`[]`: nothing to acknowledge when it is written). Throws
   * for a sink name that is not in `to`.
   */
  to(sink: S, from: Message | readonly Message[], init?: OutputInit): Output<S>;
  /** `message.done()` for one message or many. */
  done(messages: Message | readonly Message[]): void;
  /**
   * The database `name` declared under `databases:` in gateway.yaml, as a Kysely instance
   * typed by your table interfaces (`tools.database<Tables>('main')`). Ferry opens it on first
   * use, shares it (and its connection pool) between bridges, and closes it on shutdown or
   * when a reload drops or changes it: do not call `destroy()`, and call this inside `handle`
   * rather than keeping the instance from an earlier run. Throws for a name not declared.
   */
  database<DB>(name: string): Kysely<DB>;
  /**
   * The Redis connection declared as `name` under `redis:` in gateway.yaml: get/set (TTL, NX),
   * del, exists, incr/expire, JSON values and hashes, each a promise. Ferry opens it on first
   * use, shares it with the rate limits and lookups naming the same settings, and closes it
   * when the bridge stops. Throws for a name gateway.yaml does not declare.
   */
  redis(name: string): RedisTools;
}

/** A source or sink as in a YAML bridge: a one-key map of the component kind to its config. */
export type ComponentSpec = SourceSpec | SinkSpec;

export interface BridgeDefinition<T = unknown, S extends string = string> {
  /** Unique name, used in logs, metrics and the buffer. */
  readonly name: string;
  readonly description?: string;
  /** Whether the bridge runs (true by default); e.g. `Boolean(process.env.KAFKA_BROKERS)`. */
  readonly enabled?: boolean;
  /** One source, as in YAML: `{ mqtt: { topics: ['devices/+/telemetry/#'] } }`. */
  readonly from: SourceSpec;
  /**
   * Named sinks, as in YAML: `{ alerts: { kafka: { brokers, topic } }, rest: { history: {} } }`.
   * May be empty (`{}`) for a handler that writes through `tools.database` and calls `done()`
   * on each message once its write committed.
   */
  readonly to: Readonly<Record<S, SinkSpec>>;
  /**
   * The bridge's durable buffer, as in YAML. `windowSize` is the most messages the handler
   * may hold unacknowledged at once (10,000 by default): raise it when a time window holds
   * more (a 10 s window of 2,000 messages a second holds 20,000). `replay` must be `fifo`.
   */
  readonly buffer?: Partial<BufferPolicy>;
  /**
   * How long the handler may hold a message before `onHoldTimeout` applies (60 s by default).
   * Held messages are shown per bridge in `/api/status` (count and oldest age) and as
   * `ferry_handler_held_oldest_age_seconds`; past this, the bridge's state is `degraded`.
   */
  readonly maxHoldMs?: number;
  /**
   * What happens to a message held longer than `maxHoldMs`: `warn` (default) logs it once and
   * keeps it; `ack` settles it as handled; `deadLetter` moves it to the dead letters.
   */
  readonly onHoldTimeout?: 'warn' | 'ack' | 'deadLetter';
  /**
   * Called each time the pipeline starts (at gateway start, and again after the pipeline
   * failed). Returns the outputs; each goes to the sink it names once it is emitted.
   */
  handle(messages: Observable<Message<T>>, tools: BridgeTools<S>): Observable<Output<S>>;
}

/** Marks what `defineBridge` returned, across copies of this module. */
const BRIDGE = Symbol.for('ferry.bridge-definition');

/**
 * Declares a custom bridge: the default export of a `bridges/*.ts` module.
 *
 * ```ts
 * import { filter, map } from 'rxjs';
 * import { defineBridge } from 'ferry';
 *
 * export default defineBridge({
 *   name: 'hot-rooms',
 *   from: { mqtt: { topics: ['devices/+/telemetry/#'] } },
 *   to: { hot: { history: {} } },
 *   handle: (messages, tools) => messages.pipe(
 *     filter((m) => m.json<{ celsius: number }>().celsius > 30),
 *     map((m) => tools.to('hot', m)),
 *   ),
 * });
 * ```
 *
 * Ferry acks a message when the outputs built from it are confirmed by their sinks, or when
 * you are done with it (see `Message`). An output that fails sends its messages back to the
 * buffer to be delivered again. An error thrown in the pipeline is pinned on the message
 * being handled when it was thrown (or found by handing the held messages over again one at
 * a time): that message is dead-lettered with the error, and `handle` is called anew at once
 * with the messages it held; outputs already sent for them are not sent again.
 */
export function defineBridge<T = unknown, S extends string = string>(definition: BridgeDefinition<T, S>): BridgeDefinition<T, S> {
  Object.defineProperty(definition, BRIDGE, { value: true, enumerable: false });
  return definition;
}

export function isBridgeDefinition(value: unknown): value is BridgeDefinition {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[BRIDGE] === true;
}
