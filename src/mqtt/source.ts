import { map } from 'rxjs';
import { z } from 'zod';
import type { SourceComponent } from '../core/component.ts';
import { createDelivery, settlesUpstream } from '../core/delivery.ts';
import { createEnvelope } from '../core/envelope.ts';
import { compileTemplate, refineTemplate, templateFilterProblem } from '../core/template.ts';
import { invalidFilterReason } from '../core/topic.ts';
import type { EmbeddedBroker } from './embedded-broker.ts';
import { lazySchema } from '../core/lazy-schema.ts';
import { steadyNow } from '../core/steady-clock.ts';

const topicFilter = z.string().superRefine((filter, ctx) => {
  const reason = invalidFilterReason(filter);
  if (reason !== undefined) ctx.addIssue({ code: 'custom', message: `invalid topic filter '${filter}': ${reason}` });
});

/** Longest derived message id; a longer one is not used. */
const MAX_ID_LENGTH = 256;
/** At most one warning per bridge per this interval about ids that could not be derived; the counter has each one. */
const WARN_EVERY_MS = 60_000;

const schema = lazySchema(() =>
  z
    .strictObject({
      topics: z
        .array(topicFilter)
        .min(1)
        .meta({
          description: 'MQTT topic filters (with + and # wildcards) of the device messages this bridge takes.',
          examples: [['devices/+/telemetry/#']],
        }),
      messageId: z
        .string()
        .superRefine((source, ctx) => {
          refineTemplate(source, ctx);
        })
        .optional()
        .meta({
          description:
            "Each message's id (Kafka's `ferry-id` header, the history's key, the MQTT sinks' `ferry-id`) from the device's own, a message template that must take `${clientId}` or `${username}`: a device's resend of a message then has the same id, so upstream can drop it. A message whose template has no value (or one longer than 256 characters, or with control characters) keeps a generated id. A UUIDv7 made at ingress when absent.",
          examples: ['${clientId}:${payload.seq}', '${clientId}:${header.msg-id}'],
        }),
    })
    .superRefine((config, ctx) => {
      if (config.messageId === undefined) return;
      let template: ReturnType<typeof compileTemplate>;
      try {
        template = compileTemplate(config.messageId);
      } catch {
        return; // reported by the field's own check
      }
      const problem = templateFilterProblem(template, config.topics);
      if (problem !== undefined) ctx.addIssue({ code: 'custom', path: ['messageId'], message: `template '${config.messageId}': ${problem}` });
      if (!template.fields.some((f) => f.kind === 'clientId' || f.kind === 'username')) {
        ctx.addIssue({
          code: 'custom',
          path: ['messageId'],
          message: `template '${config.messageId}' takes neither \${clientId} nor \${username}: ids from message data alone would let one device's messages pass for duplicates of another's`,
        });
      }
    }),
);

export interface MqttSourceDeps {
  readonly broker: EmbeddedBroker;
}

/**
 * Device messages from the embedded broker whose topics match the bridge's filters. With
 * `messageId`, each message's id is rendered from its own data (issue 16, item 9: Ferry's ids
 * let upstream drop Ferry's own redeliveries, but a device's resend that Ferry could not tell
 * from a new message gets a new id; the device's own sequence number does not change).
 */
export const mqttSource: SourceComponent<ReturnType<typeof schema>, MqttSourceDeps> = {
  kind: 'mqtt',
  description: 'Messages devices publish to the embedded MQTT broker.',
  get schema() {
    return schema();
  },
  filters: (config) => config.topics,
  create: (config, ctx, deps) => {
    const tap = deps.broker.tap(ctx.bridge, config.topics);
    if (config.messageId === undefined) return tap;
    const template = compileTemplate(config.messageId);
    const labels = { bridge: ctx.bridge };
    let warnedAt = Number.NEGATIVE_INFINITY;
    let sinceWarning = 0;
    const notDerived = (topic: string, clientId: string | undefined, reason: string) => {
      ctx.counters.count('mqtt.messages.id_not_derived', labels);
      sinceWarning += 1;
      if (steadyNow() - warnedAt < WARN_EVERY_MS) return;
      ctx.logger.warn(
        { topic, clientId, reason, since: sinceWarning },
        `mqtt source of bridge '${ctx.bridge}': messageId '${config.messageId}' not derived; the message keeps a generated id`,
      );
      warnedAt = steadyNow();
      sinceWarning = 0;
    };
    return tap.pipe(
      map((delivery) => {
        const { envelope } = delivery;
        let id: string;
        try {
          id = template.render({ envelope, filters: config.topics });
        } catch (error) {
          notDerived(envelope.topic, envelope.origin.clientId, (error as Error).message);
          return delivery;
        }
        if (id.length > MAX_ID_LENGTH || /[\u0000-\u001f\u007f-\u009f]/.test(id)) {
          notDerived(envelope.topic, envelope.origin.clientId, `the id would be longer than ${MAX_ID_LENGTH} characters or have control characters`);
          return delivery;
        }
        return createDelivery(createEnvelope({ ...envelope, id }), settlesUpstream(delivery));
      }),
    );
  },
};
