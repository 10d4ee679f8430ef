import type { Subscriber } from 'rxjs';
import type { Logger } from 'pino';
import type { Counters } from '../core/component.ts';
import type { Delivery } from '../core/delivery.ts';
import { createEnvelope } from '../core/envelope.ts';
import { FerryError, isFerryError } from '../core/errors.ts';
import { splitPath } from '../core/json-fields.ts';
import { queuedStage } from '../core/queued-stage.ts';
import type { DeliveryOperator } from '../core/stream.ts';
import { isDecodedObject, parseExactJson } from '../core/exact-json.ts';
import type { TransformContext } from '../core/transform.ts';
import { type RedisClients, type RedisLease, isCommandError, processRedisClients } from './clients.ts';
import { isRedisUrl, resolveRedisReference } from './connection-config.ts';
import type { LookupConfig } from './lookup-config.ts';
import { steadyNow } from '../core/steady-clock.ts';

export interface LookupOptions {
  readonly bridge: string;
  readonly config: LookupConfig;
  readonly context: TransformContext;
  /** The Redis key of a message (the rendered `key` template); throws when a field has no value. */
  readonly keyOf: (delivery: Delivery) => string;
  readonly logger: Logger;
  readonly counters: Counters;
  readonly clients?: RedisClients;
}

/** After Redis failed, how long messages held (`onUnavailable: hold`) wait before it is tried again. */
const RETRY_MS = 1000;

/**
 * The `lookup` transform step: writes the value Redis holds under a key made from the message
 * into its JSON payload. Values (and misses) are cached locally for `cacheMs`. Messages pass
 * on in the order they came: one whose value is cached passes at once when nothing waits
 * before it; the others wait for one batched read (MGET, or pipelined HGETs) per event-loop
 * turn, one read in flight at a time.
 *
 * Nothing is dropped: a message whose payload is not a JSON object, whose key cannot be
 * rendered, whose key Redis refuses to read (WRONGTYPE, NOPERM: that key's fault, not an
 * outage) or (with `onMiss: reject`) has no value is refused through the context (dead
 * letters). When Redis cannot be reached, `onUnavailable` decides: hold the messages
 * unacknowledged and try again, pass them on without the field (counted), or refuse them. The
 * payload is re-encoded with its numbers as they came, big integers included (`parseExactJson`).
 */
export function lookupStep(options: LookupOptions): DeliveryOperator {
  return queuedStage((subscriber) => new Lookup(options, subscriber));
}

interface Entry {
  readonly delivery: Delivery;
  readonly payload: Record<string, unknown>;
  /** True when the payload holds numbers kept as their source text. */
  readonly raw: boolean;
  readonly key: string;
  /** The value read (null: no such key); undefined while not read. */
  value?: string | null;
  /** Why Redis refused to read the key (a reply error); the message is refused. */
  refused?: string;
}

/** What Redis answered for one key: its value (null: none), or the error it replied for that key alone. */
type Read = string | null | Error;

class Lookup {
  readonly #options: LookupOptions;
  readonly #out: Subscriber<Delivery>;
  readonly #path: readonly string[];
  readonly #cache = new Map<string, { readonly value: string | null; readonly expires: number }>();
  readonly #waiting: Entry[] = [];
  #busy = false;
  #immediate: NodeJS.Immediate | undefined;
  #timer: NodeJS.Timeout | undefined;
  #blockedUntil = 0;
  #outage = false;
  #closed = false;
  #lease: RedisLease | undefined;

  /** The counters' labels: one object for every message, whose key the counters keep. */
  readonly #labels: Readonly<Record<string, string>>;

  constructor(options: LookupOptions, out: Subscriber<Delivery>) {
    this.#options = options;
    this.#out = out;
    this.#path = splitPath(options.config.field);
    this.#labels = { bridge: options.bridge };
  }

  add(delivery: Delivery): void {
    const { context, config, counters, bridge } = this.#options;
    const decoded = context.exactJson(delivery.envelope);
    if (!('value' in decoded)) {
      context.reject(delivery, decoded.error, 'not_json');
      return;
    }
    if (!isDecodedObject(decoded.value)) {
      context.reject(delivery, 'lookup needs a JSON object payload', 'not_object');
      return;
    }
    let key: string;
    try {
      key = this.#options.keyOf(delivery);
    } catch (error) {
      context.reject(delivery, `lookup: key '${config.key}': ${(error as Error).message}`, 'failed');
      return;
    }
    const entry: Entry = { delivery, payload: decoded.value, raw: decoded.raw, key };
    const cached = this.#cached(key);
    if (cached !== undefined) entry.value = cached.value;
    if (this.#waiting.length === 0 && entry.value !== undefined) {
      this.#emit(entry);
      return;
    }
    if (this.#waiting.length >= config.maxWaiting) {
      counters.count('lookup.overflow', { bridge });
      delivery.nack(
        new FerryError('MESSAGE_REJECTED', `lookup of bridge '${bridge}': ${config.maxWaiting} messages already waiting for Redis (maxWaiting)`, { bridge, retryable: true }),
      );
      return;
    }
    this.#waiting.push(entry);
    this.#schedule();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#immediate !== undefined) clearImmediate(this.#immediate);
    clearTimeout(this.#timer);
    const stopping = new FerryError('SHUTDOWN', 'gateway stopping: message not stored');
    for (const entry of this.#waiting.splice(0)) entry.delivery.nack(stopping);
    this.#lease?.release();
  }

  #cached(key: string): { readonly value: string | null } | undefined {
    const hit = this.#cache.get(key);
    if (hit === undefined) return undefined;
    if (hit.expires > steadyNow()) return hit;
    this.#cache.delete(key);
    return undefined;
  }

  #remember(key: string, value: string | null, now: number): void {
    const { cacheMs, cacheSize } = this.#options.config;
    if (cacheMs === 0) return;
    this.#cache.delete(key);
    this.#cache.set(key, { value, expires: now + cacheMs });
    // Map order is insertion order: the first entry is the oldest.
    while (this.#cache.size > cacheSize) this.#cache.delete(this.#cache.keys().next().value as string);
  }

  #schedule(): void {
    if (this.#busy || this.#closed || this.#immediate !== undefined || this.#timer !== undefined || this.#waiting.length === 0) return;
    const wait = this.#blockedUntil - steadyNow();
    if (wait > 0) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.#schedule();
      }, wait);
    } else {
      this.#immediate = setImmediate(() => this.#round());
    }
  }

  #round(): void {
    this.#immediate = undefined;
    this.#flush();
    const keys = [...new Set(this.#waiting.filter((e) => e.value === undefined).map((e) => e.key))];
    if (keys.length === 0) {
      this.#schedule();
      return;
    }
    this.#busy = true;
    this.#read(keys).then(
      (values) => {
        this.#busy = false;
        if (this.#closed) return;
        this.#reachable();
        const now = steadyNow();
        const read = new Map<string, Read>();
        keys.forEach((key, i) => {
          const value = values[i] ?? null;
          read.set(key, value);
          // A refusal is not remembered: once the key is fixed, the next message reads it.
          if (!(value instanceof Error)) this.#remember(key, value, now);
        });
        for (const entry of this.#waiting) {
          const value = entry.value === undefined && entry.refused === undefined ? read.get(entry.key) : undefined;
          if (value instanceof Error) entry.refused = `lookup: key '${entry.key}': ${value.message}`;
          else if (value !== undefined) entry.value = value;
        }
        this.#flush();
        this.#schedule();
      },
      (error: unknown) => {
        this.#busy = false;
        if (this.#closed) return;
        if (isFerryError(error, 'CONFIG_INVALID')) {
          // No retry can make a connection that is not configured: holding, passing or refusing
          // every message would hide it. The stream fails, naming it.
          this.#out.error(error);
          return;
        }
        this.#unavailable(error);
        this.#schedule();
      },
    );
  }

  /** One read per key, in order; a key whose read Redis refused gets its error, and the others their values. */
  #read(keys: readonly string[]): Promise<Read[]> {
    const { config, bridge } = this.#options;
    if (this.#lease === undefined) {
      const settings = config.connection ?? (isRedisUrl(config.redis) ? resolveRedisReference(config.redis, {}) : undefined);
      if (settings === undefined) return Promise.reject(new FerryError('CONFIG_INVALID', `lookup of bridge '${bridge}': no Redis connection named '${config.redis}'`, { bridge }));
      this.#lease = (this.#options.clients ?? processRedisClients).acquire(settings);
    }
    const field = config.hashField;
    return this.#lease.connection.run(async (client) => {
      if (field === undefined) {
        try {
          return await client.mget(...keys);
        } catch (error) {
          // One key can fail a whole MGET (NOPERM for a key the ACL does not allow): each key
          // is read again on its own, so that only that key's messages are refused.
          if (!isCommandError(error)) throw error;
        }
      }
      const pipeline = client.pipeline();
      for (const key of keys) {
        if (field === undefined) pipeline.mget(key);
        else pipeline.hget(key, field);
      }
      const replies = (await pipeline.exec()) ?? [];
      return replies.map(([error, value]): Read => {
        if (error === null) return ((Array.isArray(value) ? value[0] : value) as string | null | undefined) ?? null;
        // A reply error is this key's; anything else (a timeout, the connection lost) is an outage.
        if (isCommandError(error)) return error;
        throw error;
      });
    });
  }

  /** Passes on (or refuses), in order, the messages at the head whose value is known. */
  #flush(): void {
    while (this.#waiting.length > 0 && decided(this.#waiting[0] as Entry)) this.#emit(this.#waiting.shift() as Entry);
  }

  #emit(entry: Entry): void {
    const { config, context, counters } = this.#options;
    const { value } = entry;
    if (entry.refused !== undefined) {
      context.reject(entry.delivery, entry.refused, 'failed');
      return;
    }
    let written: unknown;
    let raw = entry.raw;
    if (value === null || value === undefined) {
      counters.count('lookup.misses', this.#labels);
      if (config.onMiss === 'reject') {
        context.reject(entry.delivery, `lookup: no value in Redis for key '${entry.key}'`, 'failed');
        return;
      }
      if (config.default === undefined) {
        this.#out.next(entry.delivery);
        return;
      }
      written = config.default;
    } else {
      counters.count('lookup.hits', this.#labels);
      if (config.as === 'json') {
        try {
          const parsed = parseExactJson(value);
          written = parsed.value;
          raw ||= parsed.raw;
        } catch (error) {
          context.reject(entry.delivery, `lookup: the value of key '${entry.key}' is not JSON: ${(error as Error).message}`, 'failed');
          return;
        }
      } else {
        written = value;
      }
    }
    const payload = setField(entry.payload, this.#path, written);
    const { envelope } = entry.delivery;
    this.#out.next(context.derive(entry.delivery, createEnvelope({ ...envelope, payload: Buffer.from(JSON.stringify(payload)) }), { value: payload, raw }));
  }

  #unavailable(error: unknown): void {
    const { config, context, counters, bridge, logger } = this.#options;
    if (!this.#outage) {
      this.#outage = true;
      const what = { hold: 'holding messages unacknowledged until it is back', pass: 'storing messages without the field', reject: 'moving messages to the dead letters' };
      logger.warn(
        { err: error, bridge },
        `lookup: Redis unavailable (${error instanceof Error ? error.message : String(error)}); ${what[config.onUnavailable]} (onUnavailable: ${config.onUnavailable})`,
      );
    }
    if (config.onUnavailable === 'hold') {
      this.#blockedUntil = steadyNow() + RETRY_MS;
      return;
    }
    const reason = `lookup: Redis unavailable: ${error instanceof Error ? error.message : String(error)}`;
    // Those waiting behind a known value go in order too: everything waiting is decided now.
    for (const entry of this.#waiting.splice(0)) {
      if (decided(entry)) this.#emit(entry);
      else if (config.onUnavailable === 'reject') context.reject(entry.delivery, reason, 'failed');
      else {
        counters.count('lookup.unavailable', { bridge });
        this.#out.next(entry.delivery);
      }
    }
  }

  #reachable(): void {
    if (!this.#outage) return;
    this.#outage = false;
    this.#blockedUntil = 0;
    this.#options.logger.info({ bridge: this.#options.bridge }, 'lookup: Redis reachable again');
  }
}

/** True once a message's value was read, or Redis refused to read its key. */
function decided(entry: Entry): boolean {
  return entry.value !== undefined || entry.refused !== undefined;
}

/** A copy of `object` with `value` at `path`; objects on the way are copied (or made). */
function setField(object: Record<string, unknown>, path: readonly string[], value: unknown): Record<string, unknown> {
  const [key, ...rest] = path as [string, ...string[]];
  if (rest.length === 0) return { ...object, [key]: value };
  const inner = object[key];
  return { ...object, [key]: setField(isDecodedObject(inner) ? inner : {}, rest, value) };
}
