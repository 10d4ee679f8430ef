// A service that sends commands to devices through Kafka (a gateway's commands bridge carries
// them on to the devices): each send resolves once Kafka acknowledged the message.
// Run: KAFKA_BROKERS=localhost:9092 node examples/publish-commands.ts sensor-1 sensor-2
import { kafkaProducer } from 'ferry/kafka';

const producer = kafkaProducer({ brokers: process.env['KAFKA_BROKERS'] ?? 'localhost:9092', acks: 'all' });
const topic = process.env['COMMANDS_TOPIC'] ?? 'commands';
try {
  for (const device of process.argv.slice(2)) {
    await producer.send(topic, { key: device, value: JSON.stringify({ command: 'reboot', at: new Date().toISOString() }) });
    console.log(`sent reboot to ${device}`);
  }
} finally {
  await producer.close();
}
