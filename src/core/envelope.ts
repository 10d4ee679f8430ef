import { v7 as uuidv7 } from 'uuid';

/** Where a message entered Ferry. */
export interface Origin {
  /** Name of the source that produced it, e.g. "mqtt" or "kafka:commands". */
  readonly source: string;
  readonly clientId?: string;
  readonly username?: string;
  readonly qos?: 0 | 1 | 2;
  readonly retain?: boolean;
}

/**
 * One message. The id is assigned once at ingress and never changes: it travels upstream
 * (as a Kafka header, a Postgres unique key) so that duplicates can be dropped there.
 */
export interface Envelope {
  readonly id: string;
  readonly topic: string;
  readonly payload: Uint8Array;
  readonly key?: string;
  readonly headers: Readonly<Record<string, string>>;
  /** Milliseconds since the epoch at ingress. */
  readonly timestamp: number;
  readonly origin: Origin;
}

export interface EnvelopeInit {
  readonly topic: string;
  readonly payload: Uint8Array | string;
  readonly origin: Origin;
  readonly id?: string;
  readonly key?: string;
  readonly headers?: Readonly<Record<string, string>>;
  readonly timestamp?: number;
}

export function createEnvelope(init: EnvelopeInit): Envelope {
  const payload = typeof init.payload === 'string' ? Buffer.from(init.payload) : init.payload;
  const envelope: Envelope = {
    id: init.id ?? uuidv7(),
    topic: init.topic,
    payload,
    headers: init.headers ?? {},
    timestamp: init.timestamp ?? Date.now(),
    origin: init.origin,
    ...(init.key === undefined ? {} : { key: init.key }),
  };
  return envelope;
}
