import { z } from 'zod';
import { bridgeSchema, deviceSchema, gatewaySchema } from '../config/schema.ts';
import { componentKinds } from '../runtime/registry.ts';

export function schemaCommand(options: { kind: 'gateway' | 'bridge' | 'device' }): void {
  const schema = { gateway: gatewaySchema(), bridge: bridgeSchema(componentKinds), device: deviceSchema() }[options.kind];
  const json = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any', target: 'draft-2020-12' });
  process.stdout.write(`${JSON.stringify(json, null, 2)}\n`);
}
