// Messages of an external MQTT broker, kept on disk, then written to Kafka: the broker gets
// each PUBACK once the message is in the local buffer, and the buffer lets a message go once
// Kafka acknowledged it. Run: MQTT_URL=mqtt://localhost:1883 KAFKA_BROKERS=localhost:9092 node examples/mqtt-to-kafka.ts
// Its buffer is ./example-buffer (BUFFER_DIR): not a running gateway's data directory, whose
// buffer.db that gateway alone may write.
import { durableBuffer } from 'ferry/buffer';
import { toKafka } from 'ferry/kafka';
import { fromMqtt } from 'ferry/mqtt';

const env = (name: string, fallback: string) => process.env[name] ?? fallback;

const pipeline = fromMqtt({ url: env('MQTT_URL', 'mqtt://localhost:1883'), clientId: env('CLIENT_ID', 'ferry-example'), topics: [env('TOPICS', 'sensors/#')] })
  .pipe(
    durableBuffer({ dir: env('BUFFER_DIR', './example-buffer') }),
    toKafka({ brokers: env('KAFKA_BROKERS', 'localhost:9092'), topic: env('KAFKA_TOPIC', 'telemetry'), key: '${topic}' }),
  )
  .subscribe((event) => console.log(event.type === 'written' ? `written ${event.count}` : `failed ${event.count}: ${event.error.message}`));

console.log('ready');
process.once('SIGINT', () => pipeline.unsubscribe());
process.once('SIGTERM', () => pipeline.unsubscribe());
