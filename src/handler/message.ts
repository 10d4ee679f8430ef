import type { Kysely } from 'kysely';
import { type Envelope, NO_HEADERS, newId } from '../core/envelope.ts';
import { FerryError } from '../core/errors.ts';
import { topicCaptures } from '../core/topic-captures.ts';
import type { BridgeTools, Message, Output, OutputInit } from './define.ts';
import type { RedisTools } from '../redis/handler-tools.ts';
import type { Ticket } from './input-tracker.ts';

const decoder = new TextDecoder('utf-8');

/** What every message of one bridge shares: how to build outputs and to reject. */
export interface MessageContext {
  readonly bridge: string;
  /** The `from` topic filters, for `captures` and `rest`. */
  readonly filters: readonly string[];
  readonly tools: BridgeTools;
  reject(ticket: Ticket, error: FerryError): void;
  /** The handler is done with the message (see Message.done). */
  done(ticket: Ticket): void;
  /** The handler keeps the message (`message`, its object) for later outputs (see Message.keep). */
  keep(ticket: Ticket, message: object): void;
}

/** Errors thrown by `json()`, with the message whose payload caused them. */
const culprits = new WeakMap<Error, Ticket>();

/** The ticket of a message built here, or undefined for anything else. */
export function ticketOf(message: Message): Ticket | undefined {
  return BufferedMessage.ticketOf(message);
}

/** The message whose payload made `error` (or an error it wraps as `cause`), if any. */
export function culpritOf(error: unknown): Ticket | undefined {
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 5; depth++, e = e.cause) {
    const ticket = culprits.get(e);
    if (ticket !== undefined) return ticket;
  }
  return undefined;
}

class BufferedMessage implements Message {
  readonly #envelope: Envelope;
  readonly #context: MessageContext;
  #levels: { captures: string[]; rest: string | undefined } | undefined;
  #json: { value: unknown } | undefined;
  /**
   * Its input's ticket: a field, not a WeakMap from message to ticket (an ephemeron per message,
   * which the garbage collector pays for). The ticket holds nothing of the message.
   */
  readonly #ticket: Ticket;
  /** The ticket's generation when this object was made: once it changed, this object is a dead run's. */
  readonly #generation: number;

  constructor(ticket: Ticket, context: MessageContext) {
    this.#envelope = ticket.delivery.envelope;
    this.#context = context;
    this.#ticket = ticket;
    this.#generation = ticket.generation;
  }

  /** The ticket of a message built here, or undefined for any other object. */
  static ticketOf(message: object): Ticket | undefined {
    return #ticket in message ? (message as BufferedMessage).#ticket : undefined;
  }

  get id(): string {
    return this.#envelope.id;
  }
  get topic(): string {
    return this.#envelope.topic;
  }
  get clientId(): string | undefined {
    return this.#envelope.origin.clientId;
  }
  get username(): string | undefined {
    return this.#envelope.origin.username;
  }
  get timestamp(): number {
    return this.#envelope.timestamp;
  }
  get key(): string | undefined {
    return this.#envelope.key;
  }
  get headers(): Readonly<Record<string, string>> {
    return this.#envelope.headers;
  }
  get payload(): Uint8Array {
    return this.#envelope.payload;
  }
  get captures(): readonly string[] {
    return this.#captured().captures;
  }
  get rest(): string | undefined {
    return this.#captured().rest;
  }

  text(): string {
    return decoder.decode(this.#envelope.payload);
  }

  json<U>(): U {
    if (this.#json === undefined) {
      try {
        this.#json = { value: JSON.parse(this.text()) as unknown };
      } catch (cause) {
        const error = new FerryError(
          'MESSAGE_REJECTED',
          `bridge '${this.#context.bridge}': the payload of message ${this.id} on '${this.topic}' is not JSON (${(cause as Error).message})`,
          {
            bridge: this.#context.bridge,
            topic: this.topic,
            retryable: false,
            cause,
          },
        );
        culprits.set(error, this.#ticket);
        throw error;
      }
    }
    return this.#json.value as U;
  }

  to(sink: string, init?: OutputInit): Output {
    return this.#context.tools.to(sink, this, init);
  }

  // A failed run's message (its pipeline gone, the message handed again to the next run) settles
  // nothing: the next run decides.
  done(): void {
    if (this.#ticket.generation === this.#generation) this.#context.done(this.#ticket);
  }

  keep(): this {
    if (this.#ticket.generation === this.#generation) this.#context.keep(this.#ticket, this);
    return this;
  }

  reject(reason: string): void {
    if (this.#ticket.generation !== this.#generation) return;
    this.#context.reject(
      this.#ticket,
      new FerryError('MESSAGE_REJECTED', `rejected by the handler of bridge '${this.#context.bridge}': ${reason}`, {
        bridge: this.#context.bridge,
        topic: this.topic,
        retryable: false,
      }),
    );
  }

  /** Envelope of the message, for outputs passing it on. */
  get envelope(): Envelope {
    return this.#envelope;
  }

  #captured(): { captures: string[]; rest: string | undefined } {
    return (this.#levels ??= topicCaptures(this.#context.filters, this.#envelope.topic));
  }

  toJSON(): unknown {
    return { id: this.id, topic: this.topic, clientId: this.clientId, timestamp: this.timestamp, payload: this.text() };
  }
}

/** The message the handler sees for a ticket's input. */
export function createMessage(ticket: Ticket, context: MessageContext): Message {
  return new BufferedMessage(ticket, context);
}

/** Where tools.database finds a database: the gateway's (see runtime/databases.ts). */
export interface DatabaseLookup {
  get<DB>(name: string): Kysely<DB>;
}

const OUTPUT = Symbol.for('ferry.output');

/**
 * An output as `tools.to` builds it. A class, not a literal with the brand as a computed key
 * (which V8 builds one property at a time): one is made for every output. The brand is an own
 * property, so a copy of an output (`{ ...output, topic }`) is an output too.
 */
class BuiltOutput implements Output {
  declare readonly [OUTPUT]: true;
  declare readonly sink: string;
  declare readonly from: readonly Message[];
  declare readonly id: string;
  declare readonly topic: string;
  declare readonly payload: Uint8Array;
  declare readonly key: string | undefined;
  declare readonly clientId: string | undefined;
  declare readonly headers: Readonly<Record<string, string>>;
  declare readonly timestamp: number;

  constructor(
    sink: string,
    from: readonly Message[],
    id: string,
    topic: string,
    payload: Uint8Array,
    key: string | undefined,
    clientId: string | undefined,
    headers: Readonly<Record<string, string>>,
    timestamp: number,
  ) {
    this[OUTPUT] = true;
    this.sink = sink;
    this.from = from;
    this.id = id;
    this.topic = topic;
    this.payload = payload;
    this.key = key;
    this.clientId = clientId;
    this.headers = headers;
    this.timestamp = timestamp;
  }
}

export function isOutput(value: unknown): value is Output {
  return typeof value === 'object' && value !== null && (value as { [OUTPUT]?: unknown })[OUTPUT] === true;
}

/** The `tools` of a bridge whose sinks are `sinks`. */
export function createTools(bridge: string, sinks: readonly string[], databases?: DatabaseLookup, redis: (name: string) => RedisTools = noRedis(bridge)): BridgeTools {
  return {
    bridge,
    redis,
    database: <DB>(name: string) => {
      if (databases === undefined) throw new FerryError('CONFIG_INVALID', `bridge '${bridge}': tools.database('${name}'): no databases are declared in gateway.yaml`, { bridge });
      return databases.get<DB>(name);
    },
    done: (messages) => {
      for (const message of Array.isArray(messages) ? (messages as readonly Message[]) : [messages as Message]) message.done();
    },
    to: (sink, from, init = NO_INIT) => {
      if (!sinks.includes(sink)) {
        // The bridge's code names a sink its `to` does not declare, as tools.redis does a connection gateway.yaml does not.
        throw new FerryError(
          'CONFIG_INVALID',
          `bridge '${bridge}': tools.to('${sink}', ...) names no sink of the bridge; its sinks (the keys of \`to\`) are: ${sinks.join(', ')}`,
          {
            bridge,
          },
        );
      }
      return buildOutput(bridge, sink, Array.isArray(from) ? [...(from as readonly Message[])] : [from as Message], init);
    },
  };
}

function noRedis(bridge: string): (name: string) => RedisTools {
  return (name) => {
    throw new FerryError('CONFIG_INVALID', `bridge '${bridge}': tools.redis('${name}'): no Redis connections are declared (\`redis:\` in gateway.yaml)`, { bridge });
  };
}

/** `tools.to` without its third argument. */
const NO_INIT: OutputInit = Object.freeze({});

/**
 * An output of `tools.to`. An `init` it cannot be built from is the bridge's code at fault, as a
 * sink its `to` does not declare is: CONFIG_INVALID, not Ferry's own (INTERNAL).
 */
function buildOutput(bridge: string, sink: string, from: readonly Message[], init: OutputInit): Output {
  const first = from[0];
  const single = from.length === 1 ? first : undefined;
  if (init.payload !== undefined && init.json !== undefined) {
    throw new FerryError('CONFIG_INVALID', `bridge '${bridge}': an output to '${sink}' has both payload and json; give one`, { bridge });
  }
  let payload: Uint8Array;
  let passedOn = false;
  if (init.json !== undefined) payload = Buffer.from(JSON.stringify(init.json));
  else if (typeof init.payload === 'string') payload = Buffer.from(init.payload);
  else if (init.payload !== undefined) payload = init.payload;
  else if (single !== undefined) {
    payload = single.payload;
    passedOn = true;
  } else {
    throw new FerryError('CONFIG_INVALID', `bridge '${bridge}': an output to '${sink}' built from ${from.length} messages needs a payload or json`, { bridge });
  }
  const topic = init.topic ?? first?.topic;
  if (topic === undefined) throw new FerryError('CONFIG_INVALID', `bridge '${bridge}': an output to '${sink}' built from no message needs a topic`, { bridge });
  let clientId = first?.clientId;
  for (let i = 1; i < from.length && clientId !== undefined; i++) if ((from[i] as Message).clientId !== clientId) clientId = undefined;
  const keepsId = passedOn && init.topic === undefined && init.headers === undefined && init.key === undefined;
  return new BuiltOutput(
    sink,
    from,
    init.id ?? (keepsId ? (single as Message).id : newId()),
    topic,
    payload,
    init.key ?? single?.key,
    clientId,
    init.headers ?? single?.headers ?? NO_HEADERS,
    init.timestamp ?? (passedOn ? (single as Message).timestamp : Date.now()),
  );
}
