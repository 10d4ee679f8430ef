// The bridge most projects write by hand, the baseline of the end-to-end benchmark: an mqtt.js
// client subscribed at QoS 1 to a broker, sending each message to Kafka with one awaited
// kafkajs `producer.send` (acks=all) before it takes the next one (mqtt.js' handleMessage, so
// the broker gets the bridge's PUBACK only after Kafka's). It stores nothing itself.
// argv: <mqtt url> <topic filter> <comma-separated Kafka brokers> <Kafka topic>; prints `ready`.
import { Kafka, Partitioners, logLevel } from 'kafkajs';
import { connectAsync } from 'mqtt';

const [url, filter, brokers, topic] = process.argv.slice(2) as [string, string, string, string];
const kafka = new Kafka({ clientId: 'naive-bridge', brokers: brokers.split(','), logLevel: logLevel.WARN });
const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
await producer.connect();

const mqtt = await connectAsync(url, { clientId: `naive-bridge-${process.pid}`, clean: true, reconnectPeriod: 0 });
mqtt.handleMessage = (packet, done) => {
  producer.send({ topic, acks: -1, messages: [{ key: packet.topic.split('/')[1] ?? null, value: packet.payload as Buffer }] }).then(
    () => done(),
    (error: unknown) => {
      process.stderr.write(`naive bridge: send failed: ${String(error)}\n`);
      process.exit(1);
    },
  );
};
await mqtt.subscribeAsync(filter, { qos: 1 });
process.stdout.write('ready\n');
process.on('SIGTERM', () => {
  void Promise.all([mqtt.endAsync(true), producer.disconnect()]).finally(() => process.exit(0));
});
