import { z } from 'zod';
import type { SinkComponent, SourceComponent } from '../core/component.ts';
import { type BufferPolicy, bufferPolicySchema, bufferSettingsSchema } from '../buffer/config.ts';
import { PASSWORD_HASH_PATTERN } from '../mqtt/password.ts';
import { isLoopbackHost } from '../core/loopback.ts';

import { bridgeTemplateIssues } from './template-check.ts';
import { type TransformStep, transformSchema } from '../core/transform-config.ts';
import { type RateLimitConfig, rateLimitSchema } from '../redis/rate-limit-config.ts';
import { databasesSchema } from './databases-schema.ts';
import type { FileDigests } from './file-digests.ts';
import { telemetrySchema } from './telemetry.ts';
import { redisConnectionsSchema } from '../redis/connection-config.ts';

/** The component kinds a config may name; the runtime's registry supplies them. */
export interface ComponentKinds {
  readonly sources: readonly SourceComponent<z.ZodType, never>[];
  readonly sinks: readonly SinkComponent<z.ZodType, never>[];
}

import { aclSchema, enabled, logLevel, mqttSettingsSchema, port } from './mqtt-schema.ts';
import { lazySchema } from '../core/lazy-schema.ts';
import { MAX_TIMER_MESSAGE, MAX_TIMER_MS } from '../core/timer-limit.ts';

export { port } from './mqtt-schema.ts';
export const gatewaySchema = lazySchema(() =>
  z
    .strictObject({
      gateway: z
        .strictObject({
          name: z
            .string()
            .min(1)
            .default('ferry')
            .meta({ description: 'Name of this gateway in logs and status.', examples: ['site-7-gw1'] }),
          dataDir: z
            .string()
            .min(1)
            .default('./data')
            .meta({
              description: "Directory for Ferry's local state (history, buffers). Relative paths are relative to the config file.",
              examples: ['/var/lib/ferry'],
            }),
        })
        .prefault({})
        .meta({ description: 'Identity and local state of this gateway.' }),
      mqtt: mqttSettingsSchema(),
      admin: z
        .strictObject({
          enabled: z
            .boolean()
            .default(true)
            .meta({ description: 'Serve the admin HTTP API.', examples: [true] }),
          host: z
            .string()
            .min(1)
            .default('127.0.0.1')
            .meta({ description: 'Address of the admin HTTP server.', examples: ['127.0.0.1'] }),
          port: port.default(9180).meta({ description: 'Port of the admin HTTP server (/healthz, /readyz, /api/status, /metrics).', examples: [9180] }),
          token: z
            .string()
            .min(16, 'an admin token needs at least 16 characters')
            .optional()
            .meta({
              description:
                'Bearer token callers of /api/* and /metrics must send (`Authorization: Bearer <token>`); required when `host` is not a loopback address. Write it as ${ADMIN_TOKEN} to keep it out of the file.',
              examples: ['${FERRY_ADMIN_TOKEN}'],
            }),
          tokenFile: z
            .string()
            .min(1)
            .optional()
            .meta({ description: 'File holding the admin token (its first line), instead of `token`; relative to this file.', examples: ['/etc/ferry/admin-token'] }),
          openMetrics: z
            .boolean()
            .default(false)
            .meta({
              description: 'Serve /metrics without the token (for a Prometheus that cannot send one); /healthz and /readyz are always open.',
              examples: [true],
            }),
        })
        .superRefine((admin, ctx) => {
          if (admin.token !== undefined && admin.tokenFile !== undefined) ctx.addIssue({ code: 'custom', path: ['tokenFile'], message: 'give token or tokenFile, not both' });
          if (admin.enabled && admin.token === undefined && admin.tokenFile === undefined && !isLoopbackHost(admin.host)) {
            ctx.addIssue({
              code: 'custom',
              path: ['host'],
              message: `the admin server on ${admin.host} is reachable from other machines: set admin.token (or admin.tokenFile) so that only callers with it may reload or read status, or bind it to 127.0.0.1`,
            });
          }
        })
        .prefault({})
        .meta({ description: 'Admin HTTP server: health, readiness, status, metrics and reload. Open on loopback; elsewhere it needs a token.' }),
      log: z
        .strictObject({
          level: logLevel.default('info').meta({ description: 'Lowest level logged.', examples: ['debug'] }),
          pretty: z
            .enum(['auto', 'always', 'never'])
            .default('auto')
            .meta({
              description: 'Human-readable logs: `auto` when standard output is a terminal, JSON lines otherwise.',
              examples: ['never'],
            }),
        })
        .prefault({})
        .meta({ description: 'Logging (pino).' }),
      buffer: bufferSettingsSchema().prefault({}),
      telemetry: telemetrySchema(),
      shutdown: z
        .strictObject({
          drainTimeoutMs: z
            .int()
            .min(0)
            .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
            .default(10_000)
            .meta({
              description: 'On SIGINT/SIGTERM, how long in-flight messages may take to settle before the gateway exits anyway.',
              examples: [5000],
            }),
        })
        .prefault({})
        .meta({ description: 'Graceful shutdown.' }),
      health: z
        .strictObject({
          stalledAfterMs: z
            .int()
            .min(100)
            .default(10_000)
            .meta({
              description:
                'A sink that has held messages this long without an answer (a hung Kafka, say) is reported as stalled: logged once, and listed as degraded in /readyz and /api/status. Well below the Kafka request timeout, so a hang shows before the first retry.',
              examples: [10000],
            }),
          maxBacklogAgeMs: z
            .int()
            .min(0)
            .default(300_000)
            .meta({
              description: 'A sink whose oldest undelivered message is older than this is reported as degraded (backlog); 0 turns the check off.',
              examples: [300000],
            }),
        })
        .prefault({})
        .meta({
          description:
            'When the gateway reports trouble upstream. Degraded is not unready: /readyz answers 503 only while device traffic is refused (a full bridge under refuse, a full or failing disk, a drain).',
        }),
      redis: redisConnectionsSchema(),
      bridges: z
        .array(z.string().min(1))
        .default(['../bridges'])
        .meta({
          description: 'Bridge files or directories of bridge files (*.yaml, and *.ts custom handlers), relative to this file.',
          examples: [['../bridges'], ['bridges/telemetry.yaml']],
        }),
      databases: databasesSchema(),
      devices: z
        .array(z.string().min(1))
        .default(['../devices'])
        .meta({
          description: 'Device profile files or directories of *.yaml profiles, relative to this file.',
          examples: [['../devices']],
        }),
    })
    .superRefine((gateway, ctx) => sharedListenerPorts(gateway, ctx))
    .meta({ title: 'Ferry gateway config', description: 'config/gateway.yaml' }),
);

/**
 * Two of the gateway's listeners on one port (and one address, or a wildcard one): the second
 * would fail to bind at the start, and `ferry run` would blame another program.
 */
function sharedListenerPorts(
  gateway: {
    readonly mqtt: {
      readonly host: string;
      readonly port: number;
      readonly tls?: { readonly host?: string | undefined; readonly port: number } | undefined;
      readonly websocket?: { readonly host?: string | undefined; readonly port: number } | undefined;
    };
    readonly admin: { readonly enabled: boolean; readonly host: string; readonly port: number };
  },
  ctx: z.RefinementCtx,
): void {
  const { mqtt, admin } = gateway;
  const listeners: { readonly path: (string | number)[]; readonly host: string; readonly port: number }[] = [{ path: ['mqtt', 'port'], host: mqtt.host, port: mqtt.port }];
  if (mqtt.tls !== undefined) listeners.push({ path: ['mqtt', 'tls', 'port'], host: mqtt.tls.host ?? mqtt.host, port: mqtt.tls.port });
  if (mqtt.websocket !== undefined) listeners.push({ path: ['mqtt', 'websocket', 'port'], host: mqtt.websocket.host ?? mqtt.host, port: mqtt.websocket.port });
  if (admin.enabled) listeners.push({ path: ['admin', 'port'], host: admin.host, port: admin.port });
  const wildcard = (host: string) => host === '0.0.0.0' || host === '::' || host === '[::]';
  listeners.forEach((listener, i) => {
    if (listener.port === 0) return;
    const earlier = listeners.slice(0, i).find((o) => o.port === listener.port && (o.host === listener.host || wildcard(o.host) || wildcard(listener.host)));
    if (earlier !== undefined) {
      ctx.addIssue({ code: 'custom', path: listener.path, message: `port ${listener.port} is ${earlier.path.join('.')}'s too: each listener needs a port of its own` });
    }
  });
}

export type GatewaySection = z.output<ReturnType<typeof gatewaySchema>>;

export const bridgeName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'use letters, digits, ".", "_" and "-", starting with a letter or digit')
  .meta({ description: 'Unique name of the bridge, used in logs, metrics and the data directory.', examples: ['telemetry-to-kafka'] });

/** Each `from` and `to` entry is a one-key map: the component kind, then its config. */
export function oneOf(components: readonly (SourceComponent | SinkComponent)[]) {
  const options = components.map((c) => z.strictObject({ [c.kind]: c.schema }).meta({ description: c.description }));
  if (options.length === 0) throw new Error('no component kinds registered');
  return z.union(options as unknown as [z.ZodType, ...z.ZodType[]]);
}

export function bridgeSchema(kinds: ComponentKinds) {
  return z
    .strictObject({
      name: bridgeName,
      description: z.string().optional().meta({ description: 'What the bridge is for.' }),
      enabled,
      from: oneOf(kinds.sources).meta({ description: 'Where messages come from: one source.' }),
      to: z.array(oneOf(kinds.sinks)).min(1).meta({
        description: "Where messages go: one or more sinks, each reading the bridge's buffer at its own pace. A sink kind used twice in one bridge is named kind#index in stats.",
      }),
      buffer: bufferPolicySchema().prefault({}),
      rateLimit: rateLimitSchema().optional(),
      transform: transformSchema(),
    })
    .superRefine((bridge, ctx) => {
      for (const issue of bridgeTemplateIssues(bridge, kinds)) ctx.addIssue({ code: 'custom', path: [...issue.path], message: issue.message });
    })
    .meta({ title: 'Ferry bridge', description: 'bridges/*.yaml' });
}

export interface BridgeConfig {
  readonly name: string;
  readonly description?: string;
  readonly enabled: boolean;
  readonly from: Readonly<Record<string, unknown>>;
  readonly to: readonly Readonly<Record<string, unknown>>[];
  readonly buffer: BufferPolicy;
  /** Applied in order before the buffer; none when absent. */
  readonly transform?: readonly TransformStep[];
  readonly rateLimit?: RateLimitConfig;
  /** The file it was loaded from, for messages. */
  readonly file: string;
  /**
   * The contents of the files its source and sinks name (password, TLS), set by the loader:
   * part of the config, so that a reload restarts the bridge when one was replaced in place.
   */
  readonly fileDigests?: FileDigests;
}

export const deviceSchema = lazySchema(() =>
  z
    .strictObject({
      name: z
        .string()
        .min(1)
        .meta({ description: 'Name of the device profile.', examples: ['temperature-sensor'] }),
      description: z.string().optional().meta({ description: 'What kind of device this is.' }),
      clientId: z
        .string()
        .min(1)
        .default('*')
        .meta({
          description: 'Glob pattern of MQTT client ids this profile applies to.',
          examples: ['sensor-*'],
        }),
      credentials: z
        .array(
          z.strictObject({
            username: z
              .string()
              .min(1)
              .meta({ description: 'Username, or a glob pattern of usernames sharing this password.', examples: ['sensor-17'] }),
            passwordHash: z
              .string()
              .regex(PASSWORD_HASH_PATTERN, 'expected a hash from `ferry device hash-password` (scrypt$...)')
              .optional()
              .meta({
                description:
                  'Salted scrypt hash of the password, made by `ferry device hash-password`; never the password itself. Without it, this login connects only with a client certificate whose CN is the username (`mqtt.tls.identityFromCert`).',
                examples: ['scrypt$16384$8$1$...'],
              }),
            clientId: z
              .string()
              .min(1)
              .default('%u')
              .meta({
                description: 'Glob of the client ids this login may use; %u is the username, so by default a device connects under its own name only.',
                examples: ['%u'],
              }),
          }),
        )
        .default([])
        .meta({ description: 'Who may connect as this kind of device.' }),
      acl: aclSchema('devices/%c/#', 'devices/%c/commands/#').meta({ description: 'What devices of this profile may publish and subscribe to.' }),
      telemetry: z
        .strictObject({
          topic: z
            .string()
            .min(1)
            .meta({ description: 'Topic the device publishes telemetry to; %c is the client id.', examples: ['devices/%c/telemetry/temperature'] }),
          intervalMs: z
            .int()
            .min(1)
            .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
            .default(1000)
            .meta({ description: 'How often the device reports.', examples: [1000] }),
          fields: z
            .record(z.string(), z.strictObject({ min: z.number(), max: z.number() }))
            .default({})
            .meta({ description: 'Numeric payload fields and their ranges, for simulation.', examples: [{ celsius: { min: -10, max: 40 } }] }),
        })
        .optional()
        .meta({ description: 'What the device publishes.' }),
      payloadSchema: z
        .union([z.string().min(1), z.record(z.string(), z.unknown())])
        .optional()
        .meta({
          description:
            "JSON Schema of the device's JSON payloads, inline or as a .json file relative to this file; bridges check payloads against it with `transform: [{validate: {profile: NAME}}]`.",
          examples: ['schemas/temperature-sensor.json', { type: 'object', required: ['celsius'], properties: { celsius: { type: 'number' } } }],
        }),
    })
    .meta({ title: 'Ferry device profile', description: 'devices/*.yaml' }),
);

export type DeviceProfile = z.output<ReturnType<typeof deviceSchema>> & { readonly file: string };
