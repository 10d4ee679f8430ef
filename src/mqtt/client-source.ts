import { Observable } from 'rxjs';
import type { IPublishPacket, MqttClient } from 'mqtt';
import { z } from 'zod';
import { type Backoff, backoffDelay } from '../core/backoff.ts';
import type { ComponentContext, SourceComponent } from '../core/component.ts';
import { type DeliveryHandlers, createDelivery } from '../core/delivery.ts';
import { type Origin, createEnvelope } from '../core/envelope.ts';
import { describeError } from '../core/errors.ts';
import { invalidFilterReason } from '../core/topic.ts';
import { watchBroker } from './broker-watch.ts';
import { clientOptions, connectionFields, describeUrl, loadMqtt, tlsFiles } from './client-connection.ts';
import { ClientSubscriptions, warnOfCleanSharedSession } from './client-subscriptions.ts';
import { LossWatch, lossWatchSchema } from './loss-watch.ts';
import { type PendingPuback, type PubackStream, PubackWindow } from './puback-window.ts';
import { ReadPause } from './client-read-pause.ts';
import { propertyHeaders } from './publish-packet.ts';
import { lazySchema } from '../core/lazy-schema.ts';
import { MAX_TIMER_MESSAGE, MAX_TIMER_MS } from '../core/timer-limit.ts';

/** Why a subscription filter is invalid, shared subscriptions (`$share/<group>/<filter>`) included. */
export function subscriptionFilterReason(filter: string): string | undefined {
  if (!filter.startsWith('$share/')) return invalidFilterReason(filter);
  const [, group, ...rest] = filter.split('/');
  if (group === undefined || group === '' || /[+#]/.test(group)) return 'a shared subscription is $share/<group>/<filter> with a group name without + or #';
  if (rest.length === 0) return 'a shared subscription needs a filter after $share/<group>/';
  return invalidFilterReason(rest.join('/'));
}

const DEFAULT_SESSION_EXPIRY_SEC = 7 * 24 * 3600;

const schema = lazySchema(() =>
  z
    .strictObject({
      ...connectionFields(),
      topics: z
        .array(
          z.string().superRefine((filter, ctx) => {
            const reason = subscriptionFilterReason(filter);
            if (reason !== undefined) ctx.addIssue({ code: 'custom', message: `invalid topic filter '${filter}': ${reason}` });
          }),
        )
        .min(1)
        .meta({
          description: 'Topic filters to subscribe to. `$share/<group>/<filter>` is a shared subscription: gateways subscribing with the same group split the stream between them.',
          examples: [['sensors/#'], ['$share/ferry/sensors/+/telemetry']],
        }),
      qos: z
        .union([z.literal(0), z.literal(1), z.literal(2)])
        .default(1)
        .meta({
          description: "Subscription QoS. At 1 and 2 the broker gets its acknowledgement only after the message is in Ferry's buffer; 2 needs protocolVersion 5.",
          examples: [1],
        }),
      cleanSession: z
        .boolean()
        .default(false)
        .meta({
          description: 'Start a fresh session on every connect. False (the default) keeps a persistent session, so the broker holds messages while Ferry is disconnected.',
          examples: [false],
        }),
      sessionExpiryIntervalSec: z
        .int()
        .min(0)
        .max(0xffffffff)
        .optional()
        .meta({
          description: `MQTT 5: how long the broker keeps the session after a disconnect (default ${DEFAULT_SESSION_EXPIRY_SEC} s, 7 days; 0 ends it at disconnect). MQTT 3.1.1 sessions last as long as the broker is configured to keep them.`,
          examples: [86400],
        }),
      maxInFlight: z
        .int()
        .min(1)
        .max(65535)
        .default(1000)
        .meta({
          description:
            "Most messages taken and not yet stored at once; past it Ferry stops reading from the broker until the buffer catches up. Advertised to MQTT 5 brokers as Receive Maximum, which Mosquitto uses instead of its max_inflight_messages: the messages of one round trip, so one group commit, are at most this many. Under MQTT 3.1.1 the broker's own limit applies (Mosquitto's max_inflight_messages, 20 by default).",
          examples: [1000],
        }),
      reconnectMinMs: z
        .int()
        .min(10)
        .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
        .default(500)
        .meta({ description: 'First delay before reconnecting; it doubles per failed attempt, with ±20% jitter.', examples: [500] }),
      reconnectMaxMs: z
        .int()
        .min(10)
        .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
        .default(5_000)
        .meta({
          description:
            'Longest delay between reconnect attempts: after a broker restart, Ferry is back within this long of the broker (messages published before it resubscribes are lost unless the broker keeps its session).',
          examples: [5000],
        }),
      lossWatch: lossWatchSchema().meta({
        description: "How Ferry tells that the broker drops this source's messages: its own lag, the broker's drop counter and its log topic (see docs/external-brokers.md).",
      }),
    })
    .superRefine((config, ctx) => {
      if (config.qos === 2 && config.protocolVersion !== 5) {
        ctx.addIssue({
          code: 'custom',
          path: ['qos'],
          message: 'qos 2 needs protocolVersion 5: under MQTT 3.1.1 the client acknowledges (PUBREC) a QoS 2 message before Ferry has stored it. Use qos 1, or protocolVersion 5',
        });
      }
      if (config.sessionExpiryIntervalSec !== undefined && config.protocolVersion !== 5) {
        ctx.addIssue({ code: 'custom', path: ['sessionExpiryIntervalSec'], message: 'sessionExpiryIntervalSec is an MQTT 5 setting: set protocolVersion 5 or remove it' });
      }
      if (config.reconnectMinMs > config.reconnectMaxMs) {
        ctx.addIssue({ code: 'custom', path: ['reconnectMinMs'], message: `reconnectMinMs (${config.reconnectMinMs}) must not exceed reconnectMaxMs (${config.reconnectMaxMs})` });
      }
    }),
);

export type MqttClientSourceConfig = z.output<ReturnType<typeof schema>>;

/** For mqtt.js' handleMessage callback of a QoS 1 message: mqtt.js then reads on without sending the PUBACK itself (handlers/publish.js, mqtt.js 5); the PubackWindow sends it once the message is stored. */
const ACKED_BY_FERRY = new Error('the PUBACK is sent by Ferry once the message is stored');

/**
 * Messages of an external broker, taken as an MQTT client. They go to the bridge's buffer like
 * device messages; the broker gets each PUBACK (PUBREC at QoS 2) only after the buffer
 * committed the message, on the connection it came from, in order.
 */
export const mqttClientSource: SourceComponent<ReturnType<typeof schema>> = {
  kind: 'mqttClient',
  files: tlsFiles,
  // The topics messages arrive with: a shared subscription's filter without `$share/<group>/`.
  filters: (config) => config.topics.map((filter) => (filter.startsWith('$share/') ? filter.split('/').slice(2).join('/') : filter)),
  description: 'Messages from an external MQTT broker, subscribed to as a client (mqtt.js; MQTT 3.1.1 or 5).',
  refuseCaveat:
    "when the buffer is full, Ferry stops acknowledging to the external broker, whose own queue then decides what happens: Mosquitto drops what exceeds max_queued_messages (1,000 by default) although it acknowledged those messages to their publishers. Prefer drop-oldest or drop-newest (counted and logged), or raise the broker's queue limits (max_queued_messages, max_queued_bytes)",
  get schema() {
    return schema();
  },
  create: (config, ctx) => {
    warnOfCleanSharedSession(config, ctx);
    return new Observable((subscriber) => {
      let client: MqttClient | undefined;
      const stops: (() => void)[] = [];
      let closed = false;
      loadMqtt().then(
        (mqtt) => {
          if (closed) return;
          try {
            client = mqtt.connect(config.url, sourceOptions(config, ctx));
          } catch (error) {
            subscriber.error(error);
            return;
          }
          const wired = wire(
            client,
            config,
            ctx,
            (delivery) => subscriber.next(delivery),
            () => closed,
          );
          stops.push(wired.stop);
          if (config.lossWatch.brokerTopics) stops.push(watchBroker(mqtt, config, ctx, wired.watch));
        },
        (error: unknown) => subscriber.error(error),
      );
      return () => {
        closed = true;
        for (const stop of stops) stop();
        client?.end(true);
      };
    });
  },
};

function sourceOptions(config: MqttClientSourceConfig, ctx: ComponentContext) {
  const options = clientOptions(config, `mqttClient source of bridge '${ctx.bridge}'`, ctx.configDir);
  options.clean = config.cleanSession;
  if (config.protocolVersion === 5) {
    options.properties = {
      sessionExpiryInterval: config.cleanSession ? 0 : (config.sessionExpiryIntervalSec ?? DEFAULT_SESSION_EXPIRY_SEC),
      receiveMaximum: config.maxInFlight,
    };
  }
  return options;
}

type Emit = (delivery: ReturnType<typeof createDelivery>) => void;

/** What settling a QoS 1 message does on its source: a PUBACK once stored, a reconnect if not. */
interface Qos1Intake {
  stored(pending: PendingPuback): void;
  notStored(pending: PendingPuback, topic: string, error: Error): void;
}

/**
 * The handlers of one QoS 1 delivery: one small object per message instead of two closures and
 * a literal. It is abandoned once its connection closed before its PUBACK: the broker delivers
 * it again on the next connection, so a writer still holding it (a full buffer under `refuse`)
 * nacks it rather than store it twice.
 */
class Qos1Settlement implements DeliveryHandlers {
  readonly #intake: Qos1Intake;
  readonly #pending: PendingPuback;
  readonly #topic: string;

  constructor(intake: Qos1Intake, pending: PendingPuback, topic: string) {
    this.#intake = intake;
    this.#pending = pending;
    this.#topic = topic;
  }

  onAck(): void {
    this.#intake.stored(this.#pending);
  }

  onNack(error: Error): void {
    this.#intake.notStored(this.#pending, this.#topic, error);
  }

  isAbandoned(): boolean {
    return this.#pending.state === 'dropped';
  }
}

/** The origin of a message by QoS and retain flag, shared by all its messages (frozen: one object for many envelopes). */
const ORIGINS = ([0, 1, 2] as const).map(
  (qos) => [Object.freeze({ source: 'mqttClient', qos, retain: false }), Object.freeze({ source: 'mqttClient', qos, retain: true })] as const,
) as unknown as Readonly<Record<0 | 1 | 2, readonly [Origin, Origin]>>;

/** Hooks the source onto a client; returns what stops its reconnecting and watching, and its LossWatch. */
function wire(client: MqttClient, config: MqttClientSourceConfig, ctx: ComponentContext, emit: Emit, isClosed: () => boolean): { stop: () => void; watch: LossWatch } {
  const labels = { bridge: ctx.bridge };
  const broker = describeUrl(config.url);
  const window = new PubackWindow();
  const pause = new ReadPause(client);
  const watch = new LossWatch({
    config: config.lossWatch,
    clientId: config.clientId,
    broker,
    bridge: ctx.bridge,
    maxInFlight: config.maxInFlight,
    logger: ctx.logger,
    counters: ctx.counters,
    window: () => ({ pending: window.pending, oldestAt: window.oldestAt }),
  });
  const ticker = setInterval(() => watch.tick(), 1000);
  ticker.unref();
  ctx.reportStatus?.(() => watch.status());
  const subscriptions = new ClientSubscriptions(config, ctx, broker);
  /** Connections lost since the last CONNACK; the reconnect delay doubles with each. */
  let attempts = 0;
  // ±20% jitter; the delay stops doubling after 20 failed attempts even where reconnectMaxMs is larger.
  const reconnect: Backoff = { initialMs: config.reconnectMinMs, maxMs: Math.min(config.reconnectMaxMs, config.reconnectMinMs * 2 ** 20), jitter: 0.2 };
  let reconnectTimer: NodeJS.Timeout | undefined;

  /** The window of maxInFlight messages is full; `held` is mqtt.js' read of the next packet, when Ferry stopped it. */
  let full = false;
  let held: (() => void) | undefined;
  const resume = () => {
    if (!full || window.pending >= config.maxInFlight) return;
    full = false;
    watch.paused(false);
    const next = held;
    held = undefined;
    next?.();
  };
  /** Drops the connection so the broker delivers what was not acked again on the next one. */
  const redeliver = (stream: PubackStream) => {
    if (client.stream === stream && !stream.destroyed) client.stream.destroy();
  };
  const envelope = (packet: IPublishPacket) =>
    createEnvelope({
      topic: packet.topic,
      payload: packet.payload,
      headers: packet.properties === undefined ? undefined : propertyHeaders(packet.properties),
      origin: ORIGINS[packet.qos][packet.retain ? 1 : 0],
    });
  const settle: Qos1Intake = {
    stored: (pending) => {
      window.ack(pending);
      resume();
    },
    notStored: (pending, topic, error) => {
      // Abandoned (its connection closed first): the buffer counted it, the broker sends it again.
      if (pending.state === 'dropped') return;
      ctx.counters.count('mqtt.client.not_stored', labels);
      ctx.logger.warn({ err: error, topic }, `message from ${broker} not stored; reconnecting so that the broker delivers it again`);
      // The connection goes first: dropping the entry would flush the PUBACKs of later
      // messages already stored, and the broker would redeliver this one after them.
      redeliver(pending.stream);
      window.drop(pending);
    },
  };

  client.handleMessage = (packet, callback) => {
    if (packet.qos === 2) {
      callback(); // taken at its PUBLISH (customHandleAcks below); this is its PUBREL
      return;
    }
    if (packet.qos === 0) {
      emit(createDelivery(envelope(packet), { onAck: () => {}, onNack: () => ctx.counters.count('mqtt.client.qos0_not_stored', labels) }));
      callback();
      return;
    }
    const stream = client.stream as unknown as PubackStream;
    const pending: PendingPuback | undefined = window.add(stream, packet.messageId as number);
    if (pending === undefined) {
      callback(ACKED_BY_FERRY); // its connection closed; the broker delivers it again
      return;
    }
    emit(createDelivery(envelope(packet), new Qos1Settlement(settle, pending, packet.topic)));
    if (window.pending < config.maxInFlight) {
      callback(ACKED_BY_FERRY);
      return;
    }
    full = true;
    watch.paused(true);
    // MQTT 5: the broker sends no further QoS 1 or 2 message before a PUBACK (Receive Maximum),
    // so Ferry reads on, and mqtt.js sees the PINGRESPs: a client that stopped reading misses
    // them and its keepalive ends the connection (mqtt.js at 1.5 keepalives). A broker past
    // Receive Maximum, or one of MQTT 3.1.1 (whose window Ferry does not know), is not read;
    // the ReadPause keeps the keepalive from ending the connection meanwhile.
    if (config.protocolVersion === 5 && window.pending <= config.maxInFlight) callback(ACKED_BY_FERRY);
    else held = pause.hold(() => callback(ACKED_BY_FERRY));
  };

  if (config.protocolVersion === 5) {
    // QoS 2 (MQTT 5 only): the PUBREC waits for the commit. mqtt.js reads on only after it,
    // so QoS 2 messages are taken one at a time (a ReadPause: the keepalive waits for it too).
    client.options.customHandleAcks = (_topic, _message, packet, done) => {
      if (packet.qos !== 2) {
        done(0);
        return;
      }
      const stream = client.stream;
      const pubrec = pause.hold(() => done(0));
      emit(
        createDelivery(envelope(packet), {
          onAck: () => {
            if (client.stream === stream && !stream.destroyed) pubrec();
          },
          // Its connection closed before the PUBREC: the broker delivers it again (see Qos1Settlement).
          isAbandoned: () => client.stream !== stream || stream.destroyed,
          onNack: (error) => {
            if (client.stream !== stream || stream.destroyed) return; // abandoned, as above
            ctx.counters.count('mqtt.client.not_stored', labels);
            ctx.logger.warn({ err: error, topic: packet.topic }, `message from ${broker} not stored; reconnecting so that the broker delivers it again`);
            redeliver(stream as unknown as PubackStream);
          },
        }),
      );
    };
  }

  client.on('connect', (connack) => {
    attempts = 0;
    watch.connection(true);
    // PUBACKs leave in one small write per group commit: Nagle's algorithm would hold one
    // back until the broker acknowledged the previous, and the broker waits for it.
    (client.stream as { setNoDelay?: (noDelay: boolean) => void }).setNoDelay?.(true);
    ctx.counters.count('mqtt.client.connected', labels);
    ctx.logger.info({ broker, clientId: config.clientId, sessionPresent: connack.sessionPresent }, 'connected to the external broker');
    subscriptions.connected(client, connack, isClosed);
  });

  client.on('error', (error) => {
    if (!isClosed()) ctx.logger.warn({ err: error, broker }, `external broker: ${describeError(error)}`);
  });

  client.on('close', () => {
    window.closed(client.stream as unknown as PubackStream);
    pause.closed();
    full = false;
    held = undefined;
    watch.paused(false);
    watch.connection(false);
    if (isClosed() || reconnectTimer !== undefined) return;
    ctx.counters.count('mqtt.client.disconnected', labels);
    attempts += 1;
    const delay = backoffDelay(reconnect, attempts);
    ctx.logger.warn({ broker, retryInMs: delay, attempt: attempts }, 'disconnected from the external broker; reconnecting');
    reconnectTimer = setTimeout(() => {
      reconnectTimer = undefined;
      if (!isClosed()) client.reconnect();
    }, delay);
  });

  return {
    stop: () => {
      clearTimeout(reconnectTimer);
      clearInterval(ticker);
    },
    watch,
  };
}
