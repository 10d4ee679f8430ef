import type { IClientPublishOptions, MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import { z } from 'zod';
import { resourceSink } from '../core/batching-sink.ts';
import type { SinkComponent } from '../core/component.ts';
import type { Delivery } from '../core/delivery.ts';
import { FerryError, describeError, isFerryError, wrapError } from '../core/errors.ts';
import { TemplateError, describeField, refineTemplate } from '../core/template.ts';
import { clientOptions, connectionFields, describeUrl, loadMqtt, tlsFiles } from './client-connection.ts';
import { constantTopicProblem, sinkTopicFields, sinkTopicRenderer } from './sink-topic.ts';
import { lazySchema } from '../core/lazy-schema.ts';

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
      "Topic each message is published to: a template (`${topic}` keeps the message's own topic; also `${clientId}`, `${username}`, `${key}`, `${header.NAME}`, `${payload.a.b}`). Each field's value must stay one topic level (see `onUnsafeTopicValue`).",
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

interface Connection {
  readonly client: MqttClient;
  /** The broker's Receive Maximum (MQTT 5), or undefined. */
  readonly receiveMaximum: number | undefined;
}

/**
 * Publishes each message to an external broker. A delivery is acked after the broker's PUBACK
 * (PUBCOMP at QoS 2) and nacked when the publish fails or the connection drops first, so the
 * buffer sends it again on a fresh connection. Under MQTT 5 the message's headers travel as
 * user properties, with its id as `ferry-id`. A message without a topic it may be published to
 * (a field without a value, a value that would leave its topic level, an invalid topic, one
 * outside `allowedTopics`) is refused alone, for good, and the rest of its batch is published.
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
    const renderTopic = sinkTopicRenderer(config, [], TOPIC_LIMITS, true);
    return resourceSink(
      config,
      () => connect(config, component, broker, ctx.logger, ctx.configDir),
      ({ client }) => {
        client.end(true);
      },
      async ({ client, receiveMaximum }, batch) => {
        const rejected = new Map<Delivery, FerryError>();
        const publishable: Delivery[] = [];
        const topics: string[] = [];
        for (const delivery of batch) {
          try {
            topics.push(renderTopic(delivery.envelope));
            publishable.push(delivery);
          } catch (error) {
            if (!(error instanceof TemplateError)) throw error;
            rejected.set(
              delivery,
              wrapError('MESSAGE_INVALID', `${component}: no topic for message ${delivery.envelope.id}`, error, { component, bridge: ctx.bridge, retryable: false }),
            );
            ctx.counters.count('mqtt.client.messages.rejected', { bridge: ctx.bridge });
          }
        }
        if (publishable.length === 0) return { rejected };
        if (!client.connected) throw new FerryError('UPSTREAM_UNAVAILABLE', `${component}: not connected to ${broker}`, { component, bridge: ctx.bridge, retryable: true });
        const limit = Math.min(config.maxInFlight, receiveMaximum ?? Infinity);
        try {
          await publishAll(client, publishable, topics, limit, (delivery) => publishOptions(config, delivery));
        } catch (error) {
          if (isFerryError(error)) throw error;
          throw wrapError('SINK_WRITE_FAILED', `${component}: publish to ${broker} failed`, error, { component, bridge: ctx.bridge, retryable: true });
        }
        return { rejected };
      },
      ctx.tracing,
    );
  },
};

async function connect(config: MqttClientSinkConfig, component: string, broker: string, logger: Logger, configDir: string | undefined): Promise<Connection> {
  const mqtt = await loadMqtt();
  const client = mqtt.connect(config.url, { ...clientOptions(config, component, configDir), clean: true });
  client.on('error', (error) => logger.warn({ err: error, broker }, `${component}: ${describeError(error)}`));
  try {
    const connack = await new Promise<{ properties?: { receiveMaximum?: number } }>((resolve, reject) => {
      client.once('connect', resolve);
      client.once('error', reject);
      client.once('close', () => reject(new Error('connection closed before CONNACK')));
    });
    logger.info({ broker, clientId: config.clientId }, `${component}: connected`);
    return { client, receiveMaximum: connack.properties?.receiveMaximum };
  } catch (error) {
    client.end(true);
    throw wrapError('UPSTREAM_UNAVAILABLE', `${component}: cannot connect to ${broker}`, error, { component, retryable: true });
  }
}

function publishOptions(config: MqttClientSinkConfig, delivery: Delivery): IClientPublishOptions {
  const options: IClientPublishOptions = { qos: config.qos, retain: config.retain };
  if (config.protocolVersion === 5) {
    options.properties = { userProperties: { ...delivery.envelope.headers, 'ferry-id': delivery.envelope.id } };
    if (config.messageExpiryIntervalSec !== undefined) options.properties.messageExpiryInterval = config.messageExpiryIntervalSec;
  }
  return options;
}

/**
 * Publishes a batch with at most `limit` unacknowledged at once. Rejects on the first failed
 * publish, or when the connection closes before every acknowledgement arrived (mqtt.js would
 * keep those publishes for a reconnect that this sink never makes: it opens a new client).
 */
function publishAll(
  client: MqttClient,
  batch: readonly Delivery[],
  topics: readonly string[],
  limit: number,
  options: (delivery: Delivery) => IClientPublishOptions,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let next = 0;
    let inFlight = 0;
    let done = false;
    const finish = (error?: Error) => {
      if (done) return;
      done = true;
      client.off('close', onClose);
      if (error === undefined) resolve();
      else reject(error);
    };
    const onClose = () => finish(new Error('connection closed before the broker acknowledged every message'));
    client.on('close', onClose);
    const pump = () => {
      if (done) return;
      if (next === batch.length && inFlight === 0) {
        finish();
        return;
      }
      while (inFlight < limit && next < batch.length) {
        const i = next++;
        inFlight += 1;
        const { payload } = (batch[i] as Delivery).envelope;
        client.publish(topics[i] as string, Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength), options(batch[i] as Delivery), (error) => {
          inFlight -= 1;
          if (error !== undefined && error !== null) finish(error);
          else pump();
        });
      }
    };
    pump();
  });
}
