import { z } from 'zod';
import type { SourceComponent } from '../core/component.ts';
import { invalidFilterReason } from '../core/topic.ts';
import type { EmbeddedBroker } from './embedded-broker.ts';

const topicFilter = z.string().superRefine((filter, ctx) => {
  const reason = invalidFilterReason(filter);
  if (reason !== undefined) ctx.addIssue({ code: 'custom', message: `invalid topic filter '${filter}': ${reason}` });
});

const schema = z.strictObject({
  topics: z.array(topicFilter).min(1).meta({
    description: 'MQTT topic filters (with + and # wildcards) of the device messages this bridge takes.',
    examples: [['devices/+/telemetry/#']],
  }),
});

export interface MqttSourceDeps {
  readonly broker: EmbeddedBroker;
}

/** Device messages from the embedded broker whose topics match the bridge's filters. */
export const mqttSource: SourceComponent<typeof schema, MqttSourceDeps> = {
  kind: 'mqtt',
  description: 'Messages devices publish to the embedded MQTT broker.',
  schema,
  filters: (config) => config.topics,
  create: (config, ctx, deps) => deps.broker.tap(ctx.bridge, config.topics),
};
