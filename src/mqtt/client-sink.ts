import type { IClientPublishOptions, IConnackPacket } from 'mqtt';
import type { Logger } from 'pino';
import { z } from 'zod';
import { resourceSink } from '../core/batching-sink.ts';
import type { SinkComponent } from '../core/component.ts';
import type { Delivery } from '../core/delivery.ts';
import { FerryError, describeError, isFerryError, wrapError } from '../core/errors.ts';
import { TemplateError, describeField, refineTemplate } from '../core/template.ts';
import { clientOptions, connectionFields, describeReasonCode, describeUrl, loadMqtt, tlsFiles } from './client-connection.ts';
import { type PublishConnection, countPings, publishAll } from './client-publish.ts';
import { sentProperties } from './user-properties.ts';
import { CLOSES_TO_REFUSE, CloseSuspects } from './client-suspects.ts';
import { constantTopicProblem, sinkTopicFields, sinkTopicRenderer } from './sink-topic.ts';
import { lazySchema } from '../core/lazy-schema.ts';
import { MAX_TIMER_MESSAGE, MAX_TIMER_MS } from '../core/timer-limit.ts';

/** MQTT's own limit on a topic (65,535 bytes); the external broker applies its own. */
const TOPIC_LIMITS = { maxLength: 65_535, maxLevels: Number.POSITIVE_INFINITY };

const topicTemplate = z
  .string()
  .min(1)
  .default('${topic}')
  .superRefine((source, ctx) => {
    const template = refineTemplate(source, ctx);
    if (template === undefined) return;
    const capture = template.fields.find((f) => f.kind === 'capture' || f.kind === 'rest');
    if (capture !== undefined) {
      ctx.addIssue({
        code: 'custom',
        message: `template '${source}': ${describeField(capture)} is not available in the mqttClient sink; use \${topic}, \${clientId}, \${header.NAME} or \${payload.FIELD}`,
      });
    }
  })
  .meta({
    description:
      "Topic each message is published to: a template (`${topic}` keeps the message's own topic; also `${clientId}`, `${username}`, `${key}`, `${header.NAME}`, `${payload.a.b}`). Each field's value must not be empty and must stay one topic level (see `onUnsafeTopicValue`).",
    examples: ['${topic}', 'site-7/${clientId}/telemetry'],
  });

const schema = lazySchema(() =>
  z
    .strictObject({
      ...connectionFields(),
      topic: topicTemplate,
      ...sinkTopicFields(),
      qos: z
        .union([z.literal(0), z.literal(1), z.literal(2)])
        .default(1)
        .meta({
          description: "QoS of the published messages. At 1 and 2 a message leaves Ferry's buffer only after the broker acknowledged it; at 0 once it was written to the socket.",
          examples: [1],
        }),
      retain: z
        .boolean()
        .default(false)
        .meta({ description: 'Publish as retained messages.', examples: [false] }),
      messageExpiryIntervalSec: z
        .int()
        .min(1)
        .max(0xffffffff)
        .optional()
        .meta({
          description: 'MQTT 5: the broker discards a message not delivered within this many seconds.',
          examples: [3600],
        }),
      maxPacketSize: z
        .int()
        .min(1)
        .max(268_435_460)
        .optional()
        .meta({
          description:
            "Largest PUBLISH packet, in bytes, the broker takes (Mosquitto's `max_packet_size`). A larger message is refused alone before it is sent (dead-lettered) instead of being sent to a broker that closes the connection for it. Under MQTT 5 the smaller of this and the broker's Maximum Packet Size applies.",
          examples: [1048576],
        }),
      // 1,000, the buffer's default window. A batch ends once the broker acknowledged all of it, and
      // a broker without TCP_NODELAY (Mosquitto's default) holds its last PUBACK back until the
      // ACK that Linux delays by up to 40 ms: with batches of 100, 2,000 msgs/s into a local
      // Mosquitto, 10,000 with 1,000 (docs/benchmarks.md, An MQTT broker far away).
      batchSize: z
        .int()
        .min(1)
        .default(1000)
        .meta({ description: 'Most messages taken from the buffer at once.', examples: [1000] }),
      batchTimeMs: z
        .int()
        .min(0)
        .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
        .default(5)
        .meta({ description: 'Longest a message waits for its batch, in milliseconds.', examples: [5] }),
      maxInFlight: z
        .int()
        .min(1)
        .max(65535)
        .default(20)
        .meta({
          description: "Most publishes awaiting the broker's acknowledgement at once (lowered to the broker's Receive Maximum under MQTT 5).",
          examples: [20],
        }),
    })
    .superRefine((config, ctx) => {
      const problem = constantTopicProblem(config);
      if (problem !== undefined) ctx.addIssue({ code: 'custom', path: ['topic'], message: problem });
      if (config.messageExpiryIntervalSec !== undefined && config.protocolVersion !== 5) {
        ctx.addIssue({ code: 'custom', path: ['messageExpiryIntervalSec'], message: 'messageExpiryIntervalSec is an MQTT 5 setting: set protocolVersion 5 or remove it' });
      }
    }),
);

export type MqttClientSinkConfig = z.output<ReturnType<typeof schema>>;

interface Connection extends PublishConnection {
  /** The broker's Receive Maximum (MQTT 5), or undefined. */
  readonly receiveMaximum: number | undefined;
  /**
   * The largest PUBLISH the broker takes, in bytes: the smaller of its Maximum Packet Size (MQTT 5)
   * and `maxPacketSize`, with where it comes from; undefined without either. mqtt.js does not check
   * it, and a broker disconnects on a larger PUBLISH.
   */
  readonly packetLimit: { readonly bytes: number; readonly what: string } | undefined;
  /** The QoS messages are published at: the configured one, lowered to the broker's Maximum QoS (MQTT 5). */
  readonly qos: 0 | 1 | 2;
}

/**
 * Publishes each message to an external broker. A delivery is acked after the broker's PUBACK
 * (PUBCOMP at QoS 2) and nacked when the publish fails or the connection drops first, so the
 * buffer sends it again on a fresh connection. Under MQTT 5 the message's headers travel as
 * user properties, with its id as `ferry-id`. A message without a topic it may be published to
 * (a field without a value or with an empty one, a value that would leave its topic level, an invalid topic, one
 * outside `allowedTopics`) is refused alone, for good, and the rest of its batch is published,
 * and so is one the broker closes the connection for each time it is sent alone (CloseSuspects).
 */
export const mqttClientSink: SinkComponent<ReturnType<typeof schema>> = {
  kind: 'mqttClient',
  files: tlsFiles,
  description: 'Publishes messages to an external MQTT broker as a client (mqtt.js; MQTT 3.1.1 or 5).',
  get schema() {
    return schema();
  },
  create: (config, ctx) => {
    const component = `mqttClient sink of bridge '${ctx.bridge}'`;
    const broker = describeUrl(config.url);
    const renderTopic = sinkTopicRenderer(config, [], TOPIC_LIMITS, true, true);
    const suspects = new CloseSuspects();
    const headersDropped = (count: number) => ctx.counters.count('mqtt.client.headers_dropped', { bridge: ctx.bridge }, count);
    return resourceSink(
      config,
      () => connect(config, component, broker, ctx.logger, ctx.configDir),
      ({ client }) => {
        client.end(true);
      },
      async (connection, batch) => {
        const rejected = new Map<Delivery, FerryError>();
        const refuse = (delivery: Delivery, reason: 'topic' | 'too_large' | 'broker_refused' | 'broker_closed', message: string, cause?: unknown) => {
          rejected.set(delivery, wrapError('MESSAGE_INVALID', `${component}: ${message}`, cause, { component, bridge: ctx.bridge, retryable: false }));
          ctx.counters.count('mqtt.client.messages.rejected', { bridge: ctx.bridge, reason });
        };
        let publishable: Delivery[] = [];
        let topics: string[] = [];
        for (const delivery of batch) {
          let topic: string;
          try {
            topic = renderTopic(delivery.envelope);
          } catch (error) {
            if (!(error instanceof TemplateError)) throw error;
            refuse(delivery, 'topic', `no topic for message ${delivery.envelope.id}`, error);
            continue;
          }
          const sizeLimit = connection.packetLimit;
          const size = sizeLimit === undefined ? 0 : publishPacketSize(topic, delivery.envelope.payload.byteLength, connection.qos, publishOptions(config, delivery).properties);
          if (sizeLimit !== undefined && size > sizeLimit.bytes) {
            refuse(delivery, 'too_large', `message ${delivery.envelope.id} is a PUBLISH of ${size} bytes, over ${sizeLimit.what} (${sizeLimit.bytes} bytes)`);
            continue;
          }
          topics.push(topic);
          publishable.push(delivery);
        }
        // At QoS 0 nothing is acknowledged, so nothing tells which message a close was for.
        const judged = connection.qos > 0 ? suspects : undefined;
        /** Refused as a message the broker closes the connection for; forgotten once the write returns (a failed one is tried again). */
        const condemned: string[] = [];
        const closedFor = (delivery: Delivery) => {
          condemned.push(delivery.envelope.id);
          refuse(
            delivery,
            'broker_closed',
            `${broker} closed the connection each time message ${delivery.envelope.id} was sent alone (${CLOSES_TO_REFUSE} times or more) and took other messages meanwhile: it does not take this one (over its packet size limit, or a topic or payload it refuses)`,
          );
        };
        let setAside: Delivery | undefined;
        if (judged !== undefined) {
          const { refuse: refused, setAside: held } = judged.triage(publishable.map((d) => d.envelope.id));
          for (const i of refused) closedFor(publishable[i] as Delivery);
          if (held !== undefined) setAside = publishable[held];
          const kept = (_: unknown, i: number) => i !== held && !refused.includes(i);
          topics = topics.filter(kept);
          publishable = publishable.filter(kept);
        }
        const settled = () => {
          for (const id of condemned) suspects.forget(id);
          return { rejected };
        };
        if (publishable.length === 0) return settled();
        const { client } = connection;
        if (!client.connected) throw new FerryError('UPSTREAM_UNAVAILABLE', `${component}: not connected to ${broker}`, { component, bridge: ctx.bridge, retryable: true });
        const limit = Math.min(config.maxInFlight, connection.receiveMaximum ?? Infinity);
        let refusals: Map<number, number>;
        try {
          refusals = await publishAll(connection, publishable, topics, limit, (delivery) => ({ ...publishOptions(config, delivery, headersDropped), qos: connection.qos }), judged);
        } catch (error) {
          if (isFerryError(error)) throw error;
          throw wrapError('SINK_WRITE_FAILED', `${component}: publish to ${broker} failed`, error, { component, bridge: ctx.bridge, retryable: true });
        }
        for (const [i, code] of refusals) {
          const delivery = publishable[i] as Delivery;
          refuse(delivery, 'broker_refused', `${broker} refused message ${delivery.envelope.id} on '${topics[i]}' with ${describeReasonCode(code)}`);
        }
        // Held back until the broker took another message: it now has, or the batch is tried again.
        if (setAside !== undefined) {
          if (!suspects.isProven(setAside.envelope.id)) {
            throw new FerryError('SINK_WRITE_FAILED', `${component}: cannot tell yet whether ${broker} refuses message ${setAside.envelope.id}; trying again`, {
              component,
              bridge: ctx.bridge,
              retryable: true,
            });
          }
          closedFor(setAside);
        }
        return settled();
      },
      ctx.tracing,
    );
  },
};

async function connect(config: MqttClientSinkConfig, component: string, broker: string, logger: Logger, configDir: string | undefined): Promise<Connection> {
  const mqtt = await loadMqtt();
  const client = mqtt.connect(config.url, { ...clientOptions(config, component, configDir), clean: true });
  const pings = countPings(client);
  const disconnect: { reasonCode?: number | undefined } = {};
  client.on('error', (error) => logger.warn({ err: error, broker }, `${component}: ${describeError(error)}`));
  client.on('disconnect', (packet) => {
    disconnect.reasonCode = packet.reasonCode;
  });
  let connack: IConnackPacket;
  try {
    connack = await new Promise<IConnackPacket>((resolve, reject) => {
      client.once('connect', resolve);
      client.once('error', reject);
      client.once('close', () => reject(new Error('connection closed before CONNACK')));
    });
  } catch (error) {
    client.end(true);
    throw wrapError('UPSTREAM_UNAVAILABLE', `${component}: cannot connect to ${broker}`, error, { component, retryable: true });
  }
  const { receiveMaximum, maximumPacketSize, maximumQoS } = connack.properties ?? {};
  // Maximum QoS (MQTT 5) is 0 or 1. QoS 2 becomes 1, still at least once; below 1 nothing could
  // be confirmed, so the sink does not publish (its messages wait in the buffer).
  if (maximumQoS === 0 && config.qos > 0) {
    client.end(true);
    throw new FerryError(
      'UPSTREAM_UNAVAILABLE',
      `${component}: ${broker} takes QoS 0 only (its Maximum QoS), and this sink publishes at QoS ${config.qos}: set qos: 0 or allow QoS 1 on the broker`,
      { component, retryable: true },
    );
  }
  const qos = maximumQoS !== undefined && maximumQoS < config.qos ? (maximumQoS as 0 | 1) : config.qos;
  if (qos !== config.qos) logger.warn({ broker, qos, configured: config.qos }, `${component}: ${broker} takes QoS ${qos} at most (its Maximum QoS): publishing at QoS ${qos}`);
  logger.info({ broker, clientId: config.clientId }, `${component}: connected`);
  return { client, receiveMaximum, packetLimit: packetLimit(config.maxPacketSize, maximumPacketSize, broker), qos, disconnect, pings };
}

/**
 * The PUBLISH size limit of a connection: the sink's `maxPacketSize` (the only one a broker of
 * MQTT 3.1.1 has: it closes the connection for a larger packet) and the broker's Maximum Packet
 * Size (MQTT 5, in its CONNACK), whichever is smaller.
 */
function packetLimit(configured: number | undefined, announced: number | undefined, broker: string): Connection['packetLimit'] {
  if (announced !== undefined && (configured === undefined || announced < configured)) return { bytes: announced, what: `the Maximum Packet Size of ${broker}` };
  if (configured !== undefined) return { bytes: configured, what: `the sink's maxPacketSize for ${broker}` };
  return undefined;
}

/** How many bytes the length of a packet part takes (MQTT's variable byte integer). */
function varintBytes(value: number): number {
  return value < 128 ? 1 : value < 16_384 ? 2 : value < 2_097_152 ? 3 : 4;
}

/** The size of the PUBLISH packet mqtt.js sends for a message (the Maximum Packet Size counts all of it). */
export function publishPacketSize(topic: string, payloadBytes: number, qos: 0 | 1 | 2, properties: IClientPublishOptions['properties']): number {
  let length = 2 + Buffer.byteLength(topic) + (qos > 0 ? 2 : 0) + payloadBytes;
  if (properties !== undefined) {
    let props = properties.messageExpiryInterval === undefined ? 0 : 5;
    if (properties.responseTopic !== undefined) props += 3 + Buffer.byteLength(properties.responseTopic);
    if (properties.correlationData !== undefined) props += 3 + properties.correlationData.byteLength;
    for (const [name, value] of Object.entries(properties.userProperties ?? {})) {
      for (const one of Array.isArray(value) ? value : [value]) props += 5 + Buffer.byteLength(name) + Buffer.byteLength(String(one));
    }
    length += varintBytes(props) + props;
  }
  return 1 + varintBytes(length) + length;
}

/**
 * A message's PUBLISH options. Under MQTT 5 its headers go as properties (sentProperties: a
 * header a broker could close the connection for is left out and given to `dropped`), and
 * `response-topic` and `correlation-data` as the Response Topic and Correlation Data.
 */
function publishOptions(config: MqttClientSinkConfig, delivery: Delivery, dropped?: (count: number) => void): IClientPublishOptions {
  const options: IClientPublishOptions = { qos: config.qos, retain: config.retain };
  if (config.protocolVersion === 5) {
    const sent = sentProperties({ ...delivery.envelope.headers, 'ferry-id': delivery.envelope.id });
    if (sent.dropped.length > 0) dropped?.(sent.dropped.length);
    options.properties = { userProperties: sent.userProperties };
    if (sent.responseTopic !== undefined) options.properties.responseTopic = sent.responseTopic;
    if (sent.correlationData !== undefined) options.properties.correlationData = sent.correlationData;
    if (config.messageExpiryIntervalSec !== undefined) options.properties.messageExpiryInterval = config.messageExpiryIntervalSec;
  }
  return options;
}
