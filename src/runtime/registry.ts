import type { ComponentKinds } from '../config/schema.ts';
import type { SinkComponent } from '../core/component.ts';
import { kafkaSink } from '../kafka/sink.ts';
import { mqttSource } from '../mqtt/source.ts';
import { historySink } from '../sqlite/history-sink.ts';

/** Every component kind a bridge can name. A new technology adds its line here. */
export const sources = [mqttSource] as const;
export const sinks: readonly SinkComponent[] = [historySink, kafkaSink] as readonly SinkComponent[];

export const componentKinds: ComponentKinds = { sources, sinks };

export function findSink(kind: string): SinkComponent | undefined {
  return sinks.find((sink) => sink.kind === kind);
}
