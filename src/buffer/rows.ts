import { type Envelope, NO_HEADERS, type Origin } from '../core/envelope.ts';

export interface StoredMessage {
  readonly seq: number;
  readonly bridge: string;
  readonly envelope: Envelope;
}

export interface DeadLetter extends StoredMessage {
  readonly dlSeq: number;
  readonly sink: string;
  readonly reason: string;
  readonly attempts: number;
  readonly deadAt: number;
}

export interface BridgeUsage {
  readonly messages: number;
  readonly bytes: number;
}

/** Where a sink stands in its bridge's log; see the cursors table. */
export interface CursorState {
  readonly seq: number;
  readonly liveMark: number | null;
  readonly liveSeq: number | null;
}

export interface SinkStats {
  readonly sink: string;
  readonly cursor: number;
  /** Set while the sink replays live-first: messages after it are delivered first. */
  readonly liveMark: number | null;
  readonly pending: number;
  readonly pendingBytes: number;
  readonly oldestPendingAt: number | null;
  readonly deadLetters: number;
}

export interface BridgeStats extends BridgeUsage {
  readonly bridge: string;
  /** When the first message of the bridge's log (the lowest seq) was created, ms. */
  readonly oldestAt: number | null;
  readonly lastSeq: number;
  readonly sinks: readonly SinkStats[];
  readonly deadLetters: number;
}

export interface MessageRow {
  seq: number;
  bridge: string;
  id: string;
  topic: string;
  key: string | null;
  headers: string;
  origin: string;
  payload: Buffer;
  created_at: number;
}

/**
 * Parsed origins by their JSON: a gateway's messages come from a few thousand devices, each
 * with the same origin every time, so most rows need no JSON.parse. Bounded: cleared when full.
 */
const origins = new Map<string, Origin>();
const MAX_ORIGINS = 10_000;

export function parseOrigin(json: string): Origin {
  let origin = origins.get(json);
  if (origin === undefined) {
    if (origins.size >= MAX_ORIGINS) origins.clear();
    origin = Object.freeze(JSON.parse(json) as Origin);
    origins.set(json, origin);
  }
  return origin;
}

export const toStored = (row: MessageRow): StoredMessage => ({
  seq: row.seq,
  bridge: row.bridge,
  envelope: {
    id: row.id,
    topic: row.topic,
    payload: row.payload,
    headers: row.headers === '{}' ? NO_HEADERS : (JSON.parse(row.headers) as Record<string, string>),
    timestamp: row.created_at,
    origin: parseOrigin(row.origin),
    ...(row.key === null ? {} : { key: row.key }),
  },
});

export interface SinkCursor {
  readonly bridge: string;
  readonly sink: string;
  /** The last seq this sink confirmed. */
  readonly seq: number;
}

export type DeadLetterRow = MessageRow & { dl_seq: number; sink: string; reason: string; attempts: number; dead_at: number };

export const toDeadLetter = (row: DeadLetterRow): DeadLetter => ({
  ...toStored(row),
  dlSeq: row.dl_seq,
  sink: row.sink,
  reason: row.reason,
  attempts: row.attempts,
  deadAt: row.dead_at,
});
