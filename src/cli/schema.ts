import { type ConfigFileKind, configJsonSchema } from '../config/json-schema.ts';
import { componentKinds } from '../runtime/registry.ts';

export function schemaCommand(options: { kind: ConfigFileKind }): void {
  process.stdout.write(`${JSON.stringify(configJsonSchema(options.kind, componentKinds), null, 2)}\n`);
}
