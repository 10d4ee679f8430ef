import type { z } from 'zod';
import type { ComponentKinds } from '../config/schema.ts';
import type { SinkComponent, SourceComponent } from '../core/component.ts';
import type { EmbeddedBroker } from '../mqtt/embedded-broker.ts';
import { kafkaSink } from '../kafka/sink.ts';
import { kafkaSource } from '../kafka/source.ts';
import { deviceSink } from '../mqtt/device-sink.ts';
import { mqttSource } from '../mqtt/source.ts';
import { mqttClientSource } from '../mqtt/client-source.ts';
import { mqttClientSink } from '../mqtt/client-sink.ts';
import { postgresSource } from '../postgres/outbox-source.ts';
import { postgresSink } from '../postgres/sink.ts';
import { historySink } from '../sqlite/history-sink.ts';

/** Shared runtime objects a component may use, handed to every `create`. */
export interface RuntimeDeps {
  readonly broker: EmbeddedBroker;
}

/** Every component kind a bridge can name. A new technology adds its line here. */
export const sources: readonly SourceComponent<z.ZodType, RuntimeDeps | void>[] = [mqttSource, mqttClientSource, kafkaSource, postgresSource];
export const sinks: readonly SinkComponent<z.ZodType, RuntimeDeps | void>[] = [historySink, kafkaSink, mqttClientSink, deviceSink, postgresSink];

export const componentKinds: ComponentKinds = { sources, sinks };

export function findSource(kind: string): SourceComponent<z.ZodType, RuntimeDeps | void> | undefined {
  return sources.find((source) => source.kind === kind);
}

export function findSink(kind: string): SinkComponent<z.ZodType, RuntimeDeps | void> | undefined {
  return sinks.find((sink) => sink.kind === kind);
}
