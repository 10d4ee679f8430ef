// Per-device average, minimum and maximum temperature over 10-second windows, to Kafka.
// On when KAFKA_BROKERS is set, like telemetry-to-kafka.yaml.
import { bufferTime, debounceTime, filter, groupBy, map, mergeMap } from 'rxjs';
import { defineBridge, filterMessages, type Message } from 'ferry';

interface Reading {
  readonly celsius?: unknown;
}

const WINDOW_MS = Number(process.env.FERRY_ROLLUP_WINDOW_MS || 10_000);

/**
 * A device's group ends after this long without a reading (its last window was sent by then), so
 * that a gateway does not keep a group and its window's timer for every device id it ever saw; a
 * reading after that starts a new group.
 */
const IDLE_MS = WINDOW_MS * 3;

/** The reading's temperature, or undefined when the payload has none (or is not JSON). */
function celsius(message: Message<Reading>): number | undefined {
  try {
    const value = message.json().celsius;
    return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

export default defineBridge<Reading>({
  name: 'temperature-rollups',
  description: 'Per-device temperature average, min and max over 10 s windows, to Kafka; on when KAFKA_BROKERS is set.',
  // Empty counts as unset, as `${KAFKA_BROKERS:+true}` does in YAML.
  enabled: Boolean(process.env.KAFKA_BROKERS),
  from: { mqtt: { topics: ['devices/+/telemetry/#'] } },
  to: {
    rollups: { kafka: { brokers: process.env.KAFKA_BROKERS || 'localhost:9092', topic: process.env.FERRY_ROLLUPS_TOPIC || 'ferry.temperature-rollups' } },
  },
  handle: (messages, tools) =>
    messages.pipe(
      // Readings without a temperature are not part of a rollup: dropped here, acked as handled
      // at once (filterMessages settles what it drops).
      filterMessages((m) => celsius(m) !== undefined),
      // One group per device (the `+` of the topic filter), ended when the device is quiet for IDLE_MS.
      groupBy((m) => m.captures[0] ?? 'unknown', { duration: (device) => device.pipe(debounceTime(IDLE_MS)) }),
      mergeMap((device) =>
        device.pipe(
          bufferTime(WINDOW_MS),
          filter((window) => window.length > 0),
          // The rollup is built from every reading of the window: they are acked once Kafka confirms it.
          map((window) => {
            const values = window.map((m) => celsius(m) as number);
            return tools.to('rollups', window, {
              key: device.key,
              json: {
                device: device.key,
                from: new Date(window[0]!.timestamp).toISOString(),
                to: new Date(window.at(-1)!.timestamp).toISOString(),
                count: values.length,
                avg: Math.round((values.reduce((a, b) => a + b, 0) / values.length) * 100) / 100,
                min: Math.min(...values),
                max: Math.max(...values),
              },
            });
          }),
        ),
      ),
    ),
});
