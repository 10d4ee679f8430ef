import { z } from 'zod';
import { type LookupConfig, lookupSchema } from '../redis/lookup-config.ts';
import { lazySchema } from './lazy-schema.ts';

const fieldPath = z
  .string()
  .regex(/^[^.\s]+(\.[^.\s]+)*$/, 'a field name or a dotted path such as meta.debug')
  .meta({ description: 'A field of the JSON payload; a dotted path (`meta.debug`) reaches into nested objects.', examples: ['meta.debug'] });

const fields = (what: string) =>
  z
    .array(fieldPath)
    .min(1)
    .meta({ description: what, examples: [['device', 'celsius']] });

const validateSchema = lazySchema(() =>
  z
    .strictObject({
      profile: z
        .string()
        .min(1)
        .optional()
        .meta({
          description: 'Name of a device profile (devices/*.yaml) whose `payloadSchema` the payload must match.',
          examples: ['temperature-sensor'],
        }),
      schema: z
        .string()
        .min(1)
        .optional()
        .meta({
          description: 'A JSON Schema file (relative to the bridge file) the payload must match; instead of `profile`.',
          examples: ['schemas/climate.json'],
        }),
    })
    .superRefine((value, ctx) => {
      if ((value.profile === undefined) === (value.schema === undefined)) {
        ctx.addIssue({ code: 'custom', message: 'give exactly one of `profile` (a device profile name) or `schema` (a JSON Schema file)' });
      }
    }),
);

/** One step of a bridge's `transform` list: a one-key map naming the step. */
export const transformStepSchema = lazySchema(() =>
  z.union([
    z
      .strictObject({
        // A string refined to 'json' rather than a literal, so that a misspelt step is reported as an unknown kind.
        decode: z
          .string()
          .refine((format) => format === 'json', 'the only payload format is `json`')
          .meta({ description: 'The payload format: `json` (UTF-8).', examples: ['json'] }),
      })
      .meta({ description: '`decode: json`: the payload must be JSON in UTF-8; a message that is not is rejected.' }),
    z
      .strictObject({ keep: fields('Fields to keep; the others are removed.') })
      .meta({ description: '`keep: [fields]`: re-encodes the JSON object payload with only these fields (dotted paths reach into nested objects).' }),
    z
      .strictObject({ drop: fields('Fields to remove.') })
      .meta({ description: '`drop: [fields]`: re-encodes the JSON object payload without these fields (dotted paths reach into nested objects).' }),
    z
      .strictObject({ validate: validateSchema() })
      .meta({ description: '`validate: {profile: NAME}` or `validate: {schema: FILE}`: the JSON payload must match the JSON Schema; a message that does not is rejected.' }),
    z.strictObject({ lookup: lookupSchema() }).meta({ description: lookupSchema().description ?? '' }),
  ]),
);

export const transformSchema = lazySchema(() =>
  z
    .array(transformStepSchema())
    .default([])
    .meta({
      description:
        "Steps applied in order to every message before it is buffered. A message a step rejects (not JSON, fails the schema) is acknowledged to the device and kept in the bridge's dead letters with the reason (`ferry buffer peek --dead`).",
      examples: [[{ decode: 'json' }, { validate: { profile: 'temperature-sensor' } }, { drop: ['debug'] }]],
    }),
);

/** A `validate` step after loading: the JSON Schema it names, read and checked. */
export interface ResolvedValidate {
  readonly profile?: string;
  readonly schema?: string;
  /** Set by the config loader: the JSON Schema, and how reasons name it ("schema of profile X"). */
  readonly resolved?: { readonly jsonSchema: unknown; readonly label: string };
}

export type TransformStep =
  | { readonly decode: 'json' }
  | { readonly keep: readonly string[] }
  | { readonly drop: readonly string[] }
  | { readonly validate: ResolvedValidate }
  | { readonly lookup: LookupConfig };
