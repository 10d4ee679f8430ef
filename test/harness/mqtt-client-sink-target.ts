import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { connectAsync } from 'mqtt';
import { type MqttClientSinkConfig, mqttClientSink } from '../../src/mqtt/client-sink.ts';
import { startPrivateMosquitto } from './private-mosquitto.ts';
import { randomName } from './services.ts';

/** A private Mosquitto for an mqttClient sink to publish to, and a subscriber of what it takes. */
export interface SinkTarget {
  /** Payloads the subscriber received, in order. */
  readonly received: string[];
  /** An mqttClient sink's config: to `<prefix>/${topic}` on the broker, a 1 s connect timeout, then `sink`'s fields. */
  readonly config: MqttClientSinkConfig;
  /** Ends the subscriber and kills the broker. */
  close(): Promise<void>;
}

/**
 * Starts a private Mosquitto in `<dir>/broker` with the config `brokerConfig(<dir>/broker)`, and
 * subscribes at QoS 1 to `<prefix>/#`, the prefix a random name starting with `prefixStart`.
 */
export async function mqttClientSinkTarget(dir: string, brokerConfig: (brokerDir: string) => string, prefixStart: string, sink: Record<string, unknown>): Promise<SinkTarget> {
  mkdirSync(join(dir, 'broker'));
  const mosquitto = await startPrivateMosquitto(join(dir, 'broker'), brokerConfig(join(dir, 'broker')));
  const prefix = randomName(prefixStart);
  const subscriber = await connectAsync(mosquitto.url, { clientId: randomName('sub-'), reconnectPeriod: 0 });
  const received: string[] = [];
  subscriber.on('message', (_topic, payload) => received.push(payload.toString()));
  await subscriber.subscribeAsync(`${prefix}/#`, { qos: 1 });
  const config = mqttClientSink.schema.parse({ url: mosquitto.url, clientId: randomName('ferry-sink-'), topic: `${prefix}/\${topic}`, connectTimeoutMs: 1000, ...sink });
  return {
    received,
    config,
    close: async () => {
      await subscriber.endAsync(true);
      await mosquitto.stop('SIGKILL');
    },
  };
}
