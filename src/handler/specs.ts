// The `from` and `to` entries of a TypeScript bridge, typed from each component's own zod
// schema (its input: what may be written, defaults optional), so that a misspelled option or
// kind in a bridges/*.ts file is a compile error (issue 10). Type-only imports: nothing here
// loads a technology's code.
import type { z } from 'zod';
import type { kafkaSink } from '../kafka/sink.ts';
import type { kafkaSource } from '../kafka/source.ts';
import type { mqttClientSink } from '../mqtt/client-sink.ts';
import type { mqttClientSource } from '../mqtt/client-source.ts';
import type { deviceSink } from '../mqtt/device-sink.ts';
import type { mqttSource } from '../mqtt/source.ts';
import type { postgresSource } from '../postgres/outbox-source.ts';
import type { postgresSink } from '../postgres/sink.ts';
import type { historySink } from '../sqlite/history-sink.ts';

type ConfigOf<C> = C extends { readonly schema: infer S extends z.ZodType } ? z.input<S> : never;

/** One key, the kind, mapped to its config: `{ kafka: { brokers, topic } }`. */
type OneOf<M> = { [K in keyof M]: { readonly [P in K]: M[K] } }[keyof M];

// One line per source and sink of src/runtime/registry.ts: test/unit/handler/specs.test.ts
// type-checks a bridge naming each, and fails on a kind missing here.

/** Every source kind a bridge can name, with its config. */
export interface SourceConfigs {
  readonly mqtt: ConfigOf<typeof mqttSource>;
  readonly mqttClient: ConfigOf<typeof mqttClientSource>;
  readonly kafka: ConfigOf<typeof kafkaSource>;
  readonly postgres: ConfigOf<typeof postgresSource>;
}

/** Every sink kind a bridge can name, with its config. */
export interface SinkConfigs {
  readonly history: ConfigOf<typeof historySink>;
  readonly kafka: ConfigOf<typeof kafkaSink>;
  readonly mqttClient: ConfigOf<typeof mqttClientSink>;
  readonly devices: ConfigOf<typeof deviceSink>;
  readonly postgres: ConfigOf<typeof postgresSink>;
}

/** A bridge's source, as in YAML: `{ mqtt: { topics: ['devices/+/telemetry/#'] } }`. */
export type SourceSpec = OneOf<SourceConfigs>;

/** One sink, as in YAML: `{ kafka: { brokers, topic } }`. */
export type SinkSpec = OneOf<SinkConfigs>;
