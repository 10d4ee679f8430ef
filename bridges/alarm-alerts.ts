// Device alarms: severe ones, enriched with the device's site, go to an alerts topic in Kafka;
// every other alarm goes to the local history as it came. On when KAFKA_BROKERS is set.
// Sites come from Redis (the `main` connection of config/gateway.yaml): the key
// `site:<device>` holds where the device is installed, e.g.
//   redis-cli set site:pump-7 plant-south/pumphouse
import { concatMap } from 'rxjs';
import { defineBridge, type Message } from 'ferry';

interface Alarm {
  readonly severity?: unknown;
  readonly message?: unknown;
}

/** Alarms at or above this severity are alerts. */
const ALERT_SEVERITY = Number(process.env.FERRY_ALERT_SEVERITY || 7);

/** Prefix of the Redis keys holding each device's site (your asset register writes them). */
const SITE_KEYS = process.env.FERRY_SITE_KEY_PREFIX || 'site:';

function alarm(message: Message<Alarm>): Alarm | undefined {
  try {
    const value = message.json();
    return typeof value === 'object' && value !== null ? value : undefined;
  } catch {
    return undefined;
  }
}

// Empty counts as unset, as `${KAFKA_BROKERS:+true}` does in YAML.
const kafka = process.env.KAFKA_BROKERS || undefined;

export default defineBridge<Alarm>({
  name: 'alarm-alerts',
  description: 'Severe device alarms, with the device site, to the alerts topic in Kafka; the other alarms to the local history. On when KAFKA_BROKERS is set.',
  enabled: kafka !== undefined,
  from: { mqtt: { topics: ['devices/+/alarms/#'] } },
  to: {
    alerts: { kafka: { brokers: kafka ?? 'localhost:9092', topic: process.env.FERRY_ALERTS_TOPIC || 'ferry.alerts' } },
    history: { history: {} },
  },
  handle: (messages, tools) => {
    const redis = tools.redis('main');
    return messages.pipe(
      // concatMap: one alarm at a time, so alerts keep the order their devices sent them in.
      concatMap(async (m) => {
        const body = alarm(m);
        const severity = typeof body?.severity === 'number' ? body.severity : undefined;
        if (body === undefined || severity === undefined || severity < ALERT_SEVERITY) return tools.to('history', m);
        const device = m.captures[0] ?? m.clientId ?? 'unknown';
        // An alert goes out even when Redis is down (the connection fails fast): marked, not held back.
        const site = await redis.get(`${SITE_KEYS}${device}`).then(
          (value) => ({ site: value ?? 'unknown' }),
          (error: Error) => ({ site: 'unknown', siteError: error.message }),
        );
        return tools.to('alerts', m, {
          key: device,
          // One alert per alarm: its id lets Kafka consumers drop a copy delivered twice.
          id: m.id,
          json: { ...body, device, ...site, raisedAt: new Date(m.timestamp).toISOString() },
        });
      }),
    );
  },
});
