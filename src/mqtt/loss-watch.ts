import type { Logger } from 'pino';
import { z } from 'zod';
import type { Counters } from '../core/component.ts';
import { lazySchema } from '../core/lazy-schema.ts';
import { steadyNow } from '../core/steady-clock.ts';

export const DEFAULT_DROP_COUNTER_TOPIC = '$SYS/broker/publish/messages/dropped';
export const DEFAULT_BROKER_LOG_TOPIC = '$SYS/broker/log/N';

/** The `lossWatch` settings of an `mqttClient` source. */
export const lossWatchSchema = lazySchema(() =>
  z
    .strictObject({
      brokerTopics: z
        .boolean()
        .default(true)
        .meta({
          description:
            "Read the broker's own reports of dropped messages, on a second connection (clean session, client id `<clientId>-watch`): `dropCounterTopic` and `logTopic`. A broker that offers neither, or refuses the subscription, is simply not watched there.",
          examples: [true],
        }),
      dropCounterTopic: z
        .string()
        .min(1)
        .default(DEFAULT_DROP_COUNTER_TOPIC)
        .meta({
          description:
            'Where the broker publishes its count of dropped messages, all clients together (Mosquitto 2: `$SYS/broker/publish/messages/dropped`, every `sys_interval`).',
          examples: [DEFAULT_DROP_COUNTER_TOPIC],
        }),
      logTopic: z
        .string()
        .min(1)
        .default(DEFAULT_BROKER_LOG_TOPIC)
        .meta({
          description:
            'Where the broker publishes its notices: Mosquitto with `log_dest topic` and `log_type notice` names the client it drops messages for ("Outgoing messages are being dropped for client …"), which tells drops of this source apart from other clients\'.',
          examples: [DEFAULT_BROKER_LOG_TOPIC],
        }),
      behindAfterMs: z
        .int()
        .min(100)
        .default(5_000)
        .meta({
          description:
            'Warn once this source has been behind this long: its window of `maxInFlight` messages full (Ferry stopped reading the broker), or its oldest unacknowledged message waiting this long for the buffer. Meanwhile the broker queues for Ferry, and drops past its own limit.',
          examples: [5000],
        }),
    })
    .default({ brokerTopics: true, dropCounterTopic: DEFAULT_DROP_COUNTER_TOPIC, logTopic: DEFAULT_BROKER_LOG_TOPIC, behindAfterMs: 5_000 }),
);

export type LossWatchConfig = z.output<ReturnType<typeof lossWatchSchema>>;

/** A drop episode ends after this long without a new drop. */
const QUIET_MS = 30_000;
/** A drop counted by the broker up to this long after Ferry was behind is put down to Ferry. */
const BEHIND_SLACK_MS = 2_000;
/** A message unacknowledged this long means the source lags (a group commit takes milliseconds). */
const LAGGING_MS = 1_000;
/** At most this far back from a counter reading is looked at when the previous one is older. */
const MAX_LOOKBACK_MS = 60_000;

/** What the bridge's status shows of the source's losses and lag (/api/status, `source`). */
export type LossWatchStatus = {
  readonly connected: boolean;
  readonly inFlight: number;
  readonly maxInFlight: number;
  /** ms the source has been behind (window full, or its oldest message waiting); absent when it is not. */
  readonly behindForMs?: number;
  readonly oldestUnackedAgeMs: number;
  /** The broker's topics: `watching` once a value arrived, `refused` when the broker refused the subscription. */
  readonly brokerDropCounter: 'off' | 'waiting' | 'watching' | 'refused';
  readonly brokerLog: 'off' | 'waiting' | 'watching' | 'refused';
  /** Broker-wide drops counted since Ferry started watching (all clients). */
  readonly brokerDropped: number;
  /** Of those, the ones counted while this source was behind or away. */
  readonly brokerDroppedWhileBehind: number;
  /** Times the broker's log said it drops messages for this source's client id. */
  readonly droppingForThisClient: number;
  readonly lastDropAt?: string;
};

export interface LossWatchDeps {
  readonly config: LossWatchConfig;
  readonly clientId: string;
  readonly broker: string;
  readonly bridge: string;
  readonly maxInFlight: number;
  readonly logger: Logger;
  readonly counters: Counters;
  /** Messages read and not yet acknowledged to the broker, and since when the oldest waits (undefined: none). */
  readonly window: () => { readonly pending: number; readonly oldestAt: number | undefined };
}

/**
 * Tells when an external broker drops this source's messages, as far as MQTT lets one see it
 * (a QoS 1 stream has no sequence numbers, so a gap is invisible to the subscriber):
 *  - its own lag: the window of unacknowledged messages full (reading paused) or its oldest
 *    message waiting for the buffer, for `behindAfterMs`: warned once per episode;
 *  - the broker's drop counter (`$SYS`), which counts every client's drops: each increase is
 *    counted and warned once per episode, said to be likely Ferry's when the source was behind
 *    or disconnected meanwhile;
 *  - the broker's log topic, where Mosquitto names the client it drops for: exact.
 */
export class LossWatch {
  readonly #deps: LossWatchDeps;
  #connected = false;
  #pausedSince: number | undefined;
  /** Last moment the source was behind or away, for putting broker drops down to it. */
  #behindAt = Number.NEGATIVE_INFINITY;
  /** Start of the current lag episode (warned), when there is one. */
  #behindEpisode: number | undefined;
  #lastCounter: { value: number; at: number } | undefined;
  #dropEpisode: { since: number; last: number; dropped: number; behind: number } | undefined;
  #counterState: LossWatchStatus['brokerDropCounter'];
  #logState: LossWatchStatus['brokerLog'];
  #brokerDropped = 0;
  #brokerDroppedWhileBehind = 0;
  #droppingForThisClient = 0;
  /** When the last drop was seen, by the wall clock: only shown (intervals go by steadyNow, which a step of the wall clock does not move). */
  #lastDropAt: number | undefined;

  constructor(deps: LossWatchDeps) {
    this.#deps = deps;
    this.#counterState = deps.config.brokerTopics ? 'waiting' : 'off';
    this.#logState = deps.config.brokerTopics ? 'waiting' : 'off';
  }

  connection(up: boolean, now = steadyNow()): void {
    if (this.#connected && !up) this.#behindAt = now;
    this.#connected = up;
  }

  /** Reading from the broker stopped (the window is full) or went on. */
  paused(paused: boolean, now = steadyNow()): void {
    if (paused) this.#pausedSince ??= now;
    else if (this.#pausedSince !== undefined) {
      this.#pausedSince = undefined;
      this.#behindAt = now;
    }
  }

  /** The broker's answer to the watch subscriptions: false where it refused one. */
  subscribed(topic: 'counter' | 'log', granted: boolean): void {
    if (topic === 'counter') this.#counterState = granted ? (this.#counterState === 'watching' ? 'watching' : 'waiting') : 'refused';
    else this.#logState = granted ? (this.#logState === 'watching' ? 'watching' : 'waiting') : 'refused';
  }

  /** A reading of the broker's drop counter (all clients, since the broker started). */
  counter(value: number, now = steadyNow()): void {
    this.#counterState = 'watching';
    const previous = this.#lastCounter;
    this.#lastCounter = { value, at: now };
    // The first reading, or a restarted broker counting from 0 again: a new baseline.
    if (previous === undefined || value <= previous.value) return;
    const dropped = value - previous.value;
    const lookback = Math.min(now - previous.at, MAX_LOOKBACK_MS) + BEHIND_SLACK_MS;
    const behind = this.#lagging(now) || now - this.#behindAt <= lookback;
    this.#brokerDropped += dropped;
    if (behind) this.#brokerDroppedWhileBehind += dropped;
    this.#lastDropAt = Date.now();
    const { bridge, broker, clientId } = this.#deps;
    this.#deps.counters.count('mqtt.client.broker_drops', { bridge, ferry: behind ? 'behind' : 'keeping_up' }, dropped);
    const episode = this.#dropEpisode;
    if (episode !== undefined) {
      episode.last = now;
      episode.dropped += dropped;
      if (behind) episode.behind += dropped;
      return;
    }
    this.#dropEpisode = { since: now, last: now, dropped, behind: behind ? dropped : 0 };
    this.#deps.logger.warn(
      { broker, clientId, dropped, brokerCounter: value, ferryBehind: behind },
      behind
        ? `the external broker dropped ${dropped} message(s) while this source was behind or disconnected: likely messages for ${clientId}, lost (the broker's count covers all its clients; raise its queue limit, e.g. Mosquitto's max_queued_messages, or find what slows Ferry)`
        : `the external broker dropped ${dropped} message(s): its count covers all its clients, and this source was not behind, so they may be another client's, or a burst larger than the broker's queue for this one (raise its queue limit, e.g. Mosquitto's max_queued_messages)`,
    );
  }

  /** A line of the broker's log topic. */
  logLine(line: string): void {
    this.#logState = 'watching';
    const match = /Outgoing messages are being dropped for client (.+)\.\s*$/.exec(line);
    if (match === null || match[1] !== this.#deps.clientId) return;
    this.#droppingForThisClient += 1;
    this.#lastDropAt = Date.now();
    const { bridge, broker, clientId } = this.#deps;
    this.#deps.counters.count('mqtt.client.broker_dropping', { bridge });
    this.#deps.logger.warn(
      { broker, clientId },
      `the external broker says it is dropping messages for ${clientId}: they are lost (its queue for this session is full; raise its limit, e.g. Mosquitto's max_queued_messages, or find what slows Ferry)`,
    );
  }

  /** Called every second: starts and ends the lag and drop episodes. */
  tick(now = steadyNow()): void {
    if (this.#lagging(now)) this.#behindAt = now;
    const behind = this.#isBehind(now);
    const { bridge, broker, clientId, config } = this.#deps;
    if (behind && this.#behindEpisode === undefined) {
      this.#behindEpisode = now;
      this.#deps.counters.count('mqtt.client.behind', { bridge });
      const { pending, oldestAt } = this.#deps.window();
      this.#deps.logger.warn(
        { broker, clientId, inFlight: pending, maxInFlight: this.#deps.maxInFlight, oldestUnackedAgeMs: oldestAt === undefined ? 0 : Math.round(now - oldestAt) },
        `this source has not kept up with the external broker for ${Math.round(config.behindAfterMs / 1000)} s (messages wait for the buffer, or the window of maxInFlight is full): the broker queues for it meanwhile and drops what exceeds its queue limit`,
      );
    } else if (!behind && this.#behindEpisode !== undefined && now - this.#behindAt >= config.behindAfterMs) {
      this.#deps.logger.info({ broker, clientId, forMs: Math.round(this.#behindAt - this.#behindEpisode) }, 'this source caught up with the external broker');
      this.#behindEpisode = undefined;
    }
    const episode = this.#dropEpisode;
    if (episode !== undefined && now - episode.last >= QUIET_MS) {
      this.#dropEpisode = undefined;
      this.#deps.logger.info(
        { broker, clientId, dropped: episode.dropped, whileBehind: episode.behind, forMs: Math.round(episode.last - episode.since) },
        `the external broker stopped dropping messages (${episode.dropped} in this episode, ${episode.behind} while this source was behind)`,
      );
    }
  }

  status(now = steadyNow()): LossWatchStatus {
    const { pending, oldestAt } = this.#deps.window();
    return {
      connected: this.#connected,
      inFlight: pending,
      maxInFlight: this.#deps.maxInFlight,
      ...(this.#behindEpisode === undefined ? {} : { behindForMs: Math.round(now - this.#behindEpisode) }),
      oldestUnackedAgeMs: oldestAt === undefined ? 0 : Math.round(now - oldestAt),
      brokerDropCounter: this.#counterState,
      brokerLog: this.#logState,
      brokerDropped: this.#brokerDropped,
      brokerDroppedWhileBehind: this.#brokerDroppedWhileBehind,
      droppingForThisClient: this.#droppingForThisClient,
      ...(this.#lastDropAt === undefined ? {} : { lastDropAt: new Date(this.#lastDropAt).toISOString() }),
    };
  }

  /** Away or slow now at all: disconnected, reading paused, or a message waiting over a second. */
  #lagging(now: number): boolean {
    if (!this.#connected || this.#pausedSince !== undefined) return true;
    const { oldestAt } = this.#deps.window();
    return oldestAt !== undefined && now - oldestAt >= LAGGING_MS;
  }

  /** Behind for long: the window has been full, or the oldest message waiting, for behindAfterMs. */
  #isBehind(now: number): boolean {
    const limit = this.#deps.config.behindAfterMs;
    if (this.#pausedSince !== undefined && now - this.#pausedSince >= limit) return true;
    const { oldestAt } = this.#deps.window();
    return oldestAt !== undefined && now - oldestAt >= limit;
  }
}
