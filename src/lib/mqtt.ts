/**
 * An external MQTT broker as RxJS streams, for use outside the gateway:
 * `import { fromMqtt, toMqtt, mqttPublisher } from 'ferry/mqtt'`. The same source and sink a
 * bridge's `mqttClient:` entry runs (mqtt.js underneath; MQTT 3.1.1 and 5).
 */
import type { z } from 'zod';
import { createEnvelope } from '../core/envelope.ts';
import type { Sink, Source } from '../core/stream.ts';
import { mqttClientSink } from '../mqtt/client-sink.ts';
import { mqttClientSource } from '../mqtt/client-source.ts';
import { SinkClient } from './client.ts';
import { type StreamOptions, sinkOf, sourceOf, validated } from './component.ts';

export type { Delivery } from '../core/delivery.ts';
export type { Envelope } from '../core/envelope.ts';
export type { Sink, SinkEvent, Source } from '../core/stream.ts';
export type { StreamOptions } from './component.ts';

/** The options of `fromMqtt`: those of a bridge's `from: { mqttClient: ... }` (docs/reference/sources/mqttClient.md). */
export type MqttSourceConfig = z.input<typeof mqttClientSource.schema>;
/** The options of `toMqtt`: those of a bridge's `to: [{ mqttClient: ... }]` (docs/reference/sinks/mqttClient.md). */
export type MqttSinkConfig = z.input<typeof mqttClientSink.schema>;
/** The options of `mqttPublisher`: an mqttClient sink's, without its `topic` (each `publish` names one). */
export type MqttPublisherConfig = Omit<MqttSinkConfig, 'topic'>;

/**
 * Messages of an external broker's topics, subscribed as a client. The broker gets each
 * message's PUBACK only after its delivery was acked (a `durableBuffer` acks once the
 * message is on disk); a nacked one comes again. Unsubscribing disconnects.
 */
export function fromMqtt(config: MqttSourceConfig, options?: StreamOptions): Source {
  return sourceOf(mqttClientSource, config, options);
}

/** An operator publishing each delivery to a broker, acked after its PUBACK (PUBCOMP at QoS 2). */
export function toMqtt(config: MqttSinkConfig, options?: StreamOptions): Sink {
  return sinkOf(mqttClientSink, config, options);
}

export interface PublishOptions {
  /** QoS of this message; the publisher's `qos` unless given. */
  readonly qos?: 0 | 1 | 2;
  /** Publish as retained; the publisher's `retain` unless given. */
  readonly retain?: boolean;
  /** MQTT 5 user properties. */
  readonly headers?: Readonly<Record<string, string>>;
}

export interface MqttPublisher {
  /** Resolves on the broker's PUBACK (PUBCOMP at QoS 2; at QoS 0 once written); rejects with the error. */
  publish(topic: string, payload: string | Uint8Array, options?: PublishOptions): Promise<void>;
  /** Publishes what was handed over, then disconnects. */
  close(): Promise<void>;
}

/**
 * An MQTT publisher for one-off messages, on the mqttClient sink's code. A `qos` or `retain`
 * other than the publisher's opens one more connection for that combination (client id
 * suffixed `-q<qos>` / `-r`), since the sink publishes with one setting per connection.
 *
 * ```ts
 * const mqtt = mqttPublisher({ url: 'mqtt://localhost:1883', clientId: 'my-service' });
 * await mqtt.publish('devices/sensor-1/commands', '{"reboot":true}', { qos: 1 });
 * ```
 */
export function mqttPublisher(config: MqttPublisherConfig, options?: StreamOptions): MqttPublisher {
  const base = validated('mqttClient', mqttClientSink.schema, { ...config, topic: '${topic}' });
  const clients = new Map<string, SinkClient>();
  const clientFor = (qos: 0 | 1 | 2, retain: boolean): SinkClient => {
    const key = `${qos}/${retain}`;
    let client = clients.get(key);
    if (client === undefined) {
      const alone = qos === base.qos && retain === base.retain;
      const clientId = alone || base.clientId === undefined ? base.clientId : `${base.clientId}-q${qos}${retain ? '-r' : ''}`;
      const sinkConfig = { ...config, topic: '${topic}', qos, retain, ...(clientId === undefined ? {} : { clientId }) };
      clients.set(key, (client = new SinkClient(toMqtt(sinkConfig as MqttSinkConfig, options))));
    }
    return client;
  };
  return {
    publish(topic, payload, publishOptions = {}) {
      const client = clientFor(publishOptions.qos ?? base.qos, publishOptions.retain ?? base.retain);
      return client.write([
        createEnvelope({ topic, payload, origin: { source: 'mqttPublisher' }, ...(publishOptions.headers === undefined ? {} : { headers: publishOptions.headers }) }),
      ]);
    },
    close: async () => {
      await Promise.all([...clients.values()].map((client) => client.close()));
    },
  };
}
