import { z } from 'zod';
import type { SinkComponent, SourceComponent } from '../core/component.ts';
import { type BufferPolicy, bufferPolicySchema, bufferSettingsSchema } from '../buffer/config.ts';
import { invalidFilterReason } from '../core/topic.ts';
import { PASSWORD_HASH_PATTERN } from '../mqtt/password.ts';
import { bridgeTemplateIssues } from './template-check.ts';
import { type TransformStep, transformSchema } from '../core/transform-config.ts';
import { type RateLimitConfig, rateLimitSchema } from '../redis/rate-limit-config.ts';

/** The component kinds a config may name; the runtime's registry supplies them. */
export interface ComponentKinds {
  readonly sources: readonly SourceComponent<z.ZodType, never>[];
  readonly sinks: readonly SinkComponent<z.ZodType, never>[];
}

export const port = z.int().min(0).max(65535);

const logLevel = z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

/**
 * `enabled` takes true or false; empty (as `${VAR:+true}` leaves it when VAR is unset)
 * means false, so a bridge can be switched on by the presence of a variable.
 */
const enabled = z
  .boolean()
  .nullable()
  .default(true)
  .transform((v) => v ?? false)
  .meta({
    description: 'Whether the bridge runs. Empty means false, so `${KAFKA_BROKERS:+true}` enables it only when KAFKA_BROKERS is set.',
    examples: [true, '${KAFKA_BROKERS:+true}'],
  });

const maxConnections = (listener: string) =>
  z
    .int()
    .min(1)
    .optional()
    .meta({
      description: `Most open sockets on the ${listener} at once; more are closed as they arrive and counted as \`mqtt.connections.refused{reason=listener_full}\`. No limit when absent.`,
      examples: [10000],
    });

const listenerHost = z
  .string()
  .min(1)
  .optional()
  .meta({ description: 'Address this listener binds; `mqtt.host` when absent.', examples: ['0.0.0.0'] });

const pemFile = (what: string, example: string) =>
  z
    .string()
    .min(1)
    .meta({ description: `PEM file (relative to the config file) of ${what}.`, examples: [example] });

const tlsSchema = z
  .strictObject({
    port: port.default(8883).meta({ description: 'Port of the MQTT-over-TLS listener (0 picks a free one). The listener is off when `mqtt.tls` is absent.', examples: [8883] }),
    host: listenerHost,
    cert: pemFile('the server certificate (with its intermediates)', 'certs/server.crt'),
    key: pemFile("the server certificate's private key", 'certs/server.key'),
    ca: pemFile('the CAs that sign client certificates; needed by `requireClientCert` and `identityFromCert`', 'certs/ca.crt').optional(),
    requireClientCert: z
      .boolean()
      .default(false)
      .meta({
        description: 'Refuse, at the TLS handshake, clients without a certificate signed by `ca`.',
        examples: [true],
      }),
    identityFromCert: z
      .boolean()
      .default(false)
      .meta({
        description:
          "A client with a certificate signed by `ca` logs in, without a password, as the device credential whose username is the certificate's subject CN (client id rules as for passwords). Clients without a certificate still log in with a password unless `requireClientCert`.",
        examples: [true],
      }),
    maxConnections: maxConnections('TLS port'),
  })
  .superRefine((tls, ctx) => {
    if (tls.ca === undefined && (tls.requireClientCert || tls.identityFromCert)) {
      ctx.addIssue({ code: 'custom', path: ['ca'], message: 'requireClientCert and identityFromCert need `ca`, the CA that signs client certificates' });
    }
  });

const websocketSchema = z.strictObject({
  port: port
    .default(8083)
    .meta({ description: 'Port of the MQTT-over-WebSocket listener (0 picks a free one). The listener is off when `mqtt.websocket` is absent.', examples: [8083] }),
  host: listenerHost,
  path: z
    .string()
    .regex(/^\//, 'must start with /')
    .default('/mqtt')
    .meta({ description: 'HTTP path clients open the WebSocket on.', examples: ['/mqtt'] }),
  maxConnections: maxConnections('WebSocket port'),
  trustedProxies: z
    .array(z.string().min(1))
    .default([])
    .meta({
      description:
        "Addresses of reverse proxies in front of this port. For connections from them, the client address (used by the per-address limits and in logs) is the right-most X-Forwarded-For entry that is not itself a trusted proxy; other clients' X-Forwarded-For is ignored.",
      examples: [['127.0.0.1']],
    }),
});

export const gatewaySchema = z
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
    mqtt: z
      .strictObject({
        host: z
          .string()
          .min(1)
          .default('0.0.0.0')
          .meta({ description: 'Address the embedded MQTT broker listens on.', examples: ['127.0.0.1'] }),
        port: port.default(1883).meta({ description: 'TCP port of the embedded MQTT broker (0 picks a free one).', examples: [1883] }),
        allowAnonymous: z
          .union([z.boolean(), z.literal('loopback')])
          .default(false)
          .meta({
            description:
              'Let clients connect without a username: `false` (default), `loopback` (only from 127.0.0.0/8 and ::1), or `true`. Anonymous clients get the `anonymousAcl`.',
            examples: ['loopback'],
          }),
        anonymousAcl: aclSchema('#', '#').meta({ description: 'What anonymous clients may publish and subscribe to.' }),
        maxPacketBytes: z
          .int()
          .min(64)
          .max(268_435_460)
          .default(256 * 1024)
          .meta({
            description: 'Largest MQTT packet a client may send (header included); a larger one closes the connection before its body is read.',
            examples: [262144],
          }),
        maxTopicLength: z
          .int()
          .min(1)
          .max(65535)
          .default(1024)
          .meta({ description: 'Longest topic or filter a client may use, in UTF-8 bytes.', examples: [1024] }),
        maxTopicLevels: z
          .int()
          .min(1)
          .max(100)
          .default(32)
          .meta({ description: 'Deepest topic or filter a client may use, in levels.', examples: [32] }),
        slowSubscriberTimeoutMs: z
          .int()
          .min(100)
          .default(10_000)
          .meta({
            description:
              'A subscriber that stops reading is disconnected once its socket has stayed full this long (meanwhile delivery of the same messages to others waits). Counted as mqtt.connections.closed_slow.',
            examples: [10000],
          }),
        connectTimeoutMs: z
          .int()
          .min(100)
          .default(10_000)
          .meta({ description: 'A socket that has not sent CONNECT within this time is closed.', examples: [10000] }),
        maxConnectionsPerAddress: z
          .int()
          .min(1)
          .default(1000)
          .meta({
            description:
              'Most connection attempts one source address may make in 10 seconds; more are refused and counted. Leave room for a whole site behind one NAT address reconnecting after a restart.',
            examples: [1000],
          }),
        maxAuthFailures: z
          .int()
          .min(1)
          .default(10)
          .meta({
            description:
              'Failed logins of one username from one address within a minute before that pair is refused for 5 minutes. A check counts as failed from the moment it starts until its password proves right, so parallel guesses get no more tries than sequential ones.',
            examples: [10],
          }),
        loginChecks: z
          .strictObject({
            concurrent: z
              .int()
              .min(1)
              .max(64)
              .default(2)
              .meta({
                description: 'Password checks (scrypt, about 16 MiB and tens of milliseconds each) running at once in the whole gateway.',
                examples: [2],
              }),
            queued: z
              .int()
              .min(0)
              .default(256)
              .meta({
                description:
                  'Password checks waiting for a turn; a login past it is refused with "server unavailable" and tries again later. Waiting checks take turns by address.',
                examples: [256],
              }),
            perAddress: z
              .int()
              .min(1)
              .default(32)
              .meta({
                description:
                  'Password checks from one address running or waiting at once; more are refused with "server unavailable". Leave room for a site behind one NAT address.',
                examples: [32],
              }),
            perUsername: z
              .int()
              .min(1)
              .default(4)
              .meta({
                description: 'Password checks for one username running or waiting at once, from all addresses together; more are refused with "server unavailable".',
                examples: [4],
              }),
          })
          .prefault({})
          .meta({
            description:
              "Bounds on the password checking that connecting clients can cause, so that a flood of logins cannot guess in parallel or slow down everyone else's login.",
          }),
        topicAliasMaximum: z
          .int()
          .min(0)
          .max(65535)
          .default(16)
          .meta({
            description:
              'MQTT 5: how many topic aliases a client may set up on its connection (a device then sends a long topic once and a 2-byte number after). Advertised in CONNACK; 0 turns aliases off.',
            examples: [16],
          }),
        maxSessionExpirySeconds: z
          .int()
          .min(1)
          .max(0xffff_fffe)
          .optional()
          .meta({
            description:
              'MQTT 5: the longest session expiry a client may ask for; a longer one (or "never") is cut to this and the client told so in CONNACK. No limit when absent, as for MQTT 3.1.1 persistent sessions, which never expire.',
            examples: [604800],
          }),
        persistence: z
          .enum(['sqlite', 'memory'])
          .default('sqlite')
          .meta({
            description:
              'Where the broker keeps retained messages and saved sessions (subscriptions, queued QoS 1 and 2 messages, QoS 2 state, wills): `sqlite`, in broker.db in the data directory, synced as `buffer.synchronous` says, so that they survive a restart or a crash; or `memory`, lost when the gateway stops.',
            examples: ['sqlite'],
          }),
        maxConnections: maxConnections('TCP port (`mqtt.port`)'),
        tls: tlsSchema.optional().meta({ description: 'MQTT over TLS (mqtts) on its own port; off when absent.' }),
        websocket: websocketSchema.optional().meta({ description: 'MQTT over WebSocket (ws) on its own port; off when absent.' }),
      })
      .prefault({})
      .meta({ description: 'The embedded MQTT broker devices connect to.' }),
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
    buffer: bufferSettingsSchema.prefault({}),
    shutdown: z
      .strictObject({
        drainTimeoutMs: z
          .int()
          .min(0)
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
    bridges: z
      .array(z.string().min(1))
      .default(['../bridges'])
      .meta({
        description: 'Bridge files or directories of bridge files (*.yaml, and *.ts custom handlers), relative to this file.',
        examples: [['../bridges'], ['bridges/telemetry.yaml']],
      }),
    devices: z
      .array(z.string().min(1))
      .default(['../devices'])
      .meta({
        description: 'Device profile files or directories of *.yaml profiles, relative to this file.',
        examples: [['../devices']],
      }),
  })
  .meta({ title: 'Ferry gateway config', description: 'config/gateway.yaml' });

export type GatewaySection = z.output<typeof gatewaySchema>;

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
      buffer: bufferPolicySchema.prefault({}),
      rateLimit: rateLimitSchema.optional(),
      transform: transformSchema,
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
}

/** Whether an address is loopback only (127.0.0.0/8, ::1, localhost): reachable from this machine alone. */
export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

function aclSchema(publish: string, subscribe: string) {
  const patterns = (what: string, fallback: string) =>
    z
      .array(
        z.string().superRefine((pattern, ctx) => {
          const reason = invalidFilterReason(pattern.replace(/%[cu]/g, 'x'));
          if (reason !== undefined) ctx.addIssue({ code: 'custom', message: `invalid ACL pattern '${pattern}': ${reason}` });
        }),
      )
      .default([fallback])
      .meta({
        description: `Topic filters the client may ${what}; %c is its client id, %u its username. \`$\` topics need a pattern starting with \`$\`.`,
        examples: [[fallback]],
      });
  return z.strictObject({ publish: patterns('publish to', publish), subscribe: patterns('subscribe to', subscribe) }).prefault({});
}

export const deviceSchema = z
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
  .meta({ title: 'Ferry device profile', description: 'devices/*.yaml' });

export type DeviceProfile = z.output<typeof deviceSchema> & { readonly file: string };
