import type { ComponentContext } from '../core/component.ts';
import { describeError } from '../core/errors.ts';
import { type ConnectionConfig, clientOptions, describeUrl, type loadMqtt } from './client-connection.ts';
import type { LossWatch, LossWatchConfig } from './loss-watch.ts';

/**
 * A second connection to an `mqttClient` source's broker that reads the broker's reports of
 * dropped messages (its `$SYS` drop counter and log topic) into the source's LossWatch. Its own
 * connection because the source's stops being read when Ferry falls behind, which is exactly
 * when these reports matter. Clean session, QoS 0, mqtt.js' own reconnecting. Returns what
 * closes it.
 */
export function watchBroker(
  mqtt: Awaited<ReturnType<typeof loadMqtt>>,
  config: ConnectionConfig & { readonly lossWatch: LossWatchConfig; readonly reconnectMaxMs: number },
  ctx: ComponentContext,
  watch: LossWatch,
): () => void {
  const { dropCounterTopic, logTopic } = config.lossWatch;
  const options = clientOptions({ ...config, clientId: `${config.clientId}-watch` }, `mqttClient source of bridge '${ctx.bridge}' (broker watch)`, ctx.configDir);
  options.clean = true;
  options.reconnectPeriod = config.reconnectMaxMs;
  if (config.protocolVersion === 5) options.properties = { sessionExpiryInterval: 0 };
  const client = mqtt.connect(config.url, options);
  const broker = describeUrl(config.url);
  let errorLogged = false;
  client.on('connect', () => {
    errorLogged = false;
    client.subscribe([dropCounterTopic, logTopic], { qos: 0 }, (error, granted) => {
      if (error !== null && error !== undefined) return;
      for (const grant of granted ?? []) {
        const which = grant.topic === dropCounterTopic ? 'counter' : 'log';
        const ok = grant.qos < 0x80;
        watch.subscribed(which, ok);
        if (!ok) {
          ctx.logger.info(
            { broker, topic: grant.topic },
            `the external broker does not let Ferry read '${grant.topic}': drops it reports there are not seen (allow ${config.clientId}-watch to subscribe to it, or set lossWatch.brokerTopics: false)`,
          );
        }
      }
    });
  });
  client.on('message', (topic, payload) => {
    if (topic === dropCounterTopic) {
      const value = Number(payload.toString().trim());
      if (Number.isSafeInteger(value) && value >= 0) watch.counter(value);
    } else if (topic === logTopic) {
      watch.logLine(payload.toString());
    }
  });
  client.on('error', (error) => {
    if (errorLogged) return;
    errorLogged = true;
    ctx.logger.info({ broker, err: error }, `broker watch connection: ${describeError(error)}`);
  });
  return () => {
    client.end(true);
  };
}
