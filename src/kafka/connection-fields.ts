import { z } from 'zod';
import { MAX_TIMER_MESSAGE, MAX_TIMER_MS } from '../core/timer-limit.ts';

/**
 * Connection settings shared by the kafka source and sink: the bootstrap brokers and the
 * timeouts of kafkajs' connections and requests. Each component places the fields where its
 * config reference lists them; `requestTimeout` says which requests the timeout is for.
 * A call makes new schemas, so the two components share no schema object.
 */
export function kafkaConnectionFields(requestTimeout: string) {
  return {
    brokers: z
      .union([
        z.array(z.string().min(1)).min(1),
        z
          .string()
          .min(1)
          .transform((s) =>
            s
              .split(',')
              .map((b) => b.trim())
              .filter((b) => b !== ''),
          ),
      ])
      .pipe(z.array(z.string().regex(/^[^:\s]+:\d+$/, 'expected host:port')).min(1))
      .meta({ description: 'Bootstrap brokers: a list or a comma-separated string of host:port.', examples: ['${KAFKA_BROKERS}', ['kafka-1:9092', 'kafka-2:9092']] }),
    connectionTimeoutMs: z
      .int()
      .min(1)
      .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
      .default(3000)
      .meta({ description: 'TCP connect timeout to a broker.', examples: [3000] }),
    requestTimeoutMs: z
      .int()
      .min(1)
      .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
      .default(30000)
      .meta({ description: requestTimeout, examples: [30000] }),
  };
}
