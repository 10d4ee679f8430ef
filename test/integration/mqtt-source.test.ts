import { connectAsync, type MqttClient } from 'mqtt';
import pino from 'pino';
import { EmbeddedBroker } from '../../src/mqtt/embedded-broker.ts';
import { CounterRegistry } from '../../src/observability/counters.ts';
import { sourceConformance } from '../conformance/source-suite.ts';

sourceConformance('mqtt (embedded broker)', {
  start: async () => {
    const broker = await EmbeddedBroker.start({ host: '127.0.0.1', port: 0, logger: pino({ level: 'silent' }), counters: new CounterRegistry() });
    const clients: MqttClient[] = [];
    let next = 0;
    const source = broker.tap('test', ['devices/+/telemetry/#']);
    return {
      source,
      produce: async (payload) => {
        // A fresh client per message, without reconnect: a nack closes its connection.
        const client = await connectAsync(`mqtt://127.0.0.1:${broker.port}`, { clientId: `dev-${next++}`, reconnectPeriod: 0 });
        clients.push(client);
        await client.publishAsync('devices/dev/telemetry/t', payload, { qos: 1 });
      },
      cleanup: async () => {
        await Promise.all(clients.map((c) => c.endAsync(true)));
        await broker.close();
      },
    };
  },
});
