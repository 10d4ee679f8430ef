import { Observable } from 'rxjs';
import { z } from 'zod';
import type { SinkComponent } from '../core/component.ts';
import type { Delivery } from '../core/delivery.ts';
import { FerryError, describeError } from '../core/errors.ts';
import type { SinkEvent } from '../core/stream.ts';
import { refineTemplate } from '../core/template.ts';
import type { CommandOutcome, PublishedCommand } from './command-tracker.ts';
import { reasonCodeText } from './command-types.ts';
import type { EmbeddedBroker } from './embedded-broker.ts';
import { constantTopicProblem, sinkTopicFields, sinkTopicRenderer } from './sink-topic.ts';
import { steadyNow } from '../core/steady-clock.ts';
import { type SentProperties, sentProperties } from './user-properties.ts';
import { lazySchema } from '../core/lazy-schema.ts';
import { MAX_TIMER_MESSAGE, MAX_TIMER_MS } from '../core/timer-limit.ts';

/** Header names a sink logs as left out of its commands; more are counted only. */
const MAX_LOGGED_HEADERS = 100;
/** Ids of refused commands kept to count and log each once when its source delivers it again. */
const MAX_REFUSED_IDS = 1000;
/** MQTT's own limits (65,535 bytes) and aedes' (100 levels): the device side checks the rest. */
const TOPIC_LIMITS = { maxLength: 65_535, maxLevels: 100 };

const schema = lazySchema(() =>
  z
    .strictObject({
      topic: z
        .string()
        .min(1)
        .superRefine((source, ctx) => {
          refineTemplate(source, ctx);
        })
        .meta({
          description:
            "MQTT topic of each command, a message template: `${key}` is the Kafka record key, `${header.NAME}` a header, `${payload.a.b}` a JSON field. Each field's value must not be empty and must stay one topic level (see `onUnsafeTopicValue`).",
          examples: ['devices/${key}/commands', 'devices/${header.device}/commands/${header.name}'],
        }),
      ...sinkTopicFields(),
      qos: z
        .union([z.literal(0), z.literal(1)])
        .default(1)
        .meta({
          description: "1: a command is acknowledged upstream only after the device's PUBACK; 0: right after it was handed to the broker (nothing waits for offline devices).",
          examples: [1],
        }),
      retain: z
        .boolean()
        .default(false)
        .meta({ description: 'Publish commands as retained messages.', examples: [false] }),
      expiryMs: z
        .int()
        .min(100)
        .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
        .default(3_600_000)
        .meta({
          description:
            'How long a QoS 1 command waits for its device (one with a persistent session gets it when it reconnects). Past it the command is dropped, counted as `commands.expired` and logged, and acknowledged upstream. At most 2147483647 (24.8 days).',
          examples: [3_600_000],
        }),
      stopTimeoutMs: z
        .int()
        .min(0)
        .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
        .default(2000)
        .meta({
          description: 'On stop, how long to wait for PUBACKs of commands in flight; commands still unacknowledged then are not acknowledged upstream (Kafka delivers them again).',
          examples: [2000],
        }),
    })
    .superRefine((config, ctx) => {
      const problem = constantTopicProblem(config);
      if (problem !== undefined) ctx.addIssue({ code: 'custom', path: ['topic'], message: problem });
    }),
);

export type DeviceSinkConfig = z.output<ReturnType<typeof schema>>;

export interface DeviceSinkDeps {
  readonly broker: EmbeddedBroker;
}

/**
 * Publishes each message as a command to the devices on the embedded broker. A delivery is
 * acked when a device's PUBACK for that very message arrives, also when the device was
 * offline with a persistent session and acks after it reconnects. A command nobody is
 * subscribed to, or not acknowledged within `expiryMs`, is counted as `commands.expired`,
 * logged and acked (so its source moves on). A topic that cannot be rendered, renders to an
 * invalid topic or outside `allowedTopics`, takes an empty field value (an empty Kafka key), or
 * one that would leave its topic level (under `onUnsafeTopicValue: refuse`), is refused for good
 * (nacked, not retryable).
 */
export const deviceSink: SinkComponent<ReturnType<typeof schema>, DeviceSinkDeps> = {
  kind: 'devices',
  description: "Publishes messages as commands to devices on the embedded MQTT broker; acked on the device's PUBACK.",
  get schema() {
    return schema();
  },
  // Checked against the source at load time: a ${1} under a Kafka source can never render.
  templates: (config) => [{ path: ['topic'], template: config.topic }],
  create: (config, ctx, deps) => {
    const filters = ctx.sourceFilters ?? [];
    const renderTopic = sinkTopicRenderer(config, filters, TOPIC_LIMITS, false);
    const component = `devices sink of bridge '${ctx.bridge}'`;
    const labels = { bridge: ctx.bridge };
    const loggedHeaders = new Set<string>();
    // A Kafka source delivers a refused message once more, by itself, to tell a refusal of its
    // own from one of its batch: the same message (its id) is counted and logged once.
    const refusedIds = new Set<string>();

    return (input) =>
      new Observable<SinkEvent>((subscriber) => {
        const waiting = new Set<PublishedCommand>();
        let inputDone = false;
        let stopTimer: NodeJS.Timeout | undefined;
        const completeWhenIdle = () => {
          if (inputDone && waiting.size === 0) subscriber.complete();
        };

        const refuse = (delivery: Delivery, reason: string) => {
          const { id, key } = delivery.envelope;
          const error = new FerryError('MESSAGE_REJECTED', `${component}: ${reason}`, { component, bridge: ctx.bridge, retryable: false });
          if (refusedIds.has(id)) {
            ctx.logger.debug({ id, key }, `${component}: refused again: ${reason}`);
          } else {
            refusedIds.add(id);
            if (refusedIds.size > MAX_REFUSED_IDS) refusedIds.delete(refusedIds.values().next().value as string);
            ctx.counters.count('commands.invalid', labels);
            ctx.logger.warn({ id, key }, error.message);
          }
          delivery.nack(error);
          subscriber.next({ type: 'failed', count: 1, error, retryable: false });
        };

        // Headers left out of the commands: counted each time, logged once per name (a source can
        // give every record the same binary header).
        const droppedHeaders = (envelope: Delivery['envelope'], topic: string, dropped: SentProperties['dropped']) => {
          ctx.counters.count('commands.headers_dropped', labels, dropped.length);
          for (const { name, reason } of dropped) {
            if (loggedHeaders.has(name) || loggedHeaders.size >= MAX_LOGGED_HEADERS) continue;
            loggedHeaders.add(name);
            ctx.logger.warn(
              { id: envelope.id, topic, header: name.slice(0, 200) },
              `${component}: header left out of the command sent to MQTT 5 devices (and of later ones, logged once): ${reason}`,
            );
          }
        };

        // A command no device will take: counted (`commands.expired` or `commands.refused`, with
        // `reason`), logged, and acked so that its source moves on.
        const dropped = (delivery: Delivery, topic: string, metric: 'commands.expired' | 'commands.refused', reason: string, why: string, detail: Record<string, unknown>) => {
          const { envelope } = delivery;
          // Each name written out, so that the metrics catalogue's check finds both counted.
          if (metric === 'commands.expired') ctx.counters.count('commands.expired', { ...labels, reason });
          else ctx.counters.count('commands.refused', { ...labels, reason });
          ctx.logger.warn({ id: envelope.id, topic, key: envelope.key, ...detail }, `${component}: command dropped: ${why}`);
          delivery.ack();
          subscriber.next({
            type: 'failed',
            count: 1,
            error: new FerryError('MESSAGE_REJECTED', `${component}: command to ${topic} dropped: ${why}`, { component, bridge: ctx.bridge, topic }),
            retryable: false,
          });
        };

        const settle = (delivery: Delivery, topic: string, outcome: CommandOutcome, started: number) => {
          const { envelope } = delivery;
          switch (outcome.status) {
            case 'acked':
            case 'sent':
            case 'answered':
              delivery.ack();
              // `answered`: delivered before, as an earlier version kept it, without its QoS.
              ctx.counters.count('commands.delivered', { ...labels, qos: outcome.status === 'acked' ? '1' : outcome.status === 'sent' ? '0' : 'unknown' });
              subscriber.next({ type: 'written', count: 1, bytes: envelope.payload.byteLength, durationMs: performance.now() - started });
              return;
            case 'no_subscriber':
              dropped(delivery, topic, 'commands.expired', outcome.status, 'no device is subscribed to its topic', { reason: outcome.status });
              return;
            case 'expired':
              dropped(delivery, topic, 'commands.expired', outcome.status, `not acknowledged by a device within ${config.expiryMs} ms`, { reason: outcome.status });
              return;
            case 'refused': {
              // The device's final word (MQTT 5): sending it again would get the same answer.
              const { clientId, reasonCode } = outcome;
              const code = reasonCodeText(reasonCode);
              dropped(delivery, topic, 'commands.refused', code, `refused by device '${clientId}' with PUBACK reason code ${code}`, { clientId, reasonCode });
              return;
            }
            case 'too_large': {
              const { clientId } = outcome;
              const why = `larger (${envelope.payload.byteLength} bytes of payload) than the Maximum Packet Size device '${clientId}' accepts: not sent to it`;
              dropped(delivery, topic, 'commands.refused', 'packet_too_large', why, { clientId, reason: 'packet_too_large' });
              return;
            }
            case 'discarded': {
              // The broker dropped the device's copy for good: the device cannot take it (its
              // window stays full), or nobody is left to (the shared subscription's member left).
              const { clientId, reason } = outcome;
              const full = reason === 'receive_queue_full';
              const why = full
                ? `the Receive Maximum of device '${clientId}' was reached, with as many commands waiting behind it as the broker keeps: not sent to it`
                : `device '${clientId}' left without acknowledging it and no other member of its shared subscription was there to take it`;
              dropped(delivery, topic, full ? 'commands.refused' : 'commands.expired', reason, why, { clientId, reason });
              return;
            }
            case 'cancelled':
              // Left unsettled on purpose: a source that keeps its messages delivers it again.
              ctx.logger.debug({ id: envelope.id, topic }, `${component}: stopped waiting for the device`);
              return;
            case 'failed': {
              const error = new FerryError('SINK_WRITE_FAILED', `${component}: publish to ${topic} failed: ${outcome.error.message}`, {
                component,
                bridge: ctx.bridge,
                topic,
                retryable: true,
                cause: outcome.error,
              });
              delivery.nack(error);
              subscriber.next({ type: 'failed', count: 1, error, retryable: true });
            }
          }
        };

        const publish = (delivery: Delivery) => {
          const { envelope } = delivery;
          let topic: string;
          try {
            topic = renderTopic(envelope);
          } catch (error) {
            refuse(delivery, describeError(error));
            return;
          }
          const started = performance.now();
          const { payload } = envelope;
          // To MQTT 5 devices: the message's headers and its id, by which a device can tell a
          // command it is sent again (delivery is at least once) from a new one.
          const { userProperties, responseTopic, correlationData, dropped } = sentProperties({ ...envelope.headers, 'ferry-id': envelope.id });
          if (dropped.length > 0) droppedHeaders(envelope, topic, dropped);
          const published = deps.broker.publishCommand({
            topic,
            payload: Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength),
            qos: config.qos,
            retain: config.retain,
            expiresAt: steadyNow() + config.expiryMs,
            headers: userProperties,
            ...(responseTopic === undefined ? {} : { responseTopic }),
            ...(correlationData === undefined ? {} : { correlationData }),
            id: envelope.id,
          });
          if (published.again !== undefined) {
            ctx.counters.count('commands.deduplicated', { ...labels, how: published.again });
            ctx.logger.debug({ id: envelope.id, topic, how: published.again }, `${component}: command delivered again by its source, not sent again`);
          }
          waiting.add(published);
          void published.outcome.then((outcome) => {
            waiting.delete(published);
            settle(delivery, topic, outcome, started);
            completeWhenIdle();
          });
        };

        const subscription = input.subscribe({
          next: publish,
          error: (error: unknown) => subscriber.error(error),
          complete: () => {
            inputDone = true;
            if (waiting.size > 0) {
              stopTimer = setTimeout(() => {
                for (const published of waiting) published.cancel();
              }, config.stopTimeoutMs);
            }
            completeWhenIdle();
          },
        });
        return () => {
          subscription.unsubscribe();
          clearTimeout(stopTimer);
          for (const published of waiting) published.cancel();
        };
      });
  },
};
