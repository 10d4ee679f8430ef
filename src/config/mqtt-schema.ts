import { z } from 'zod';
import { invalidFilterReason } from '../core/topic.ts';
import { lazySchema } from '../core/lazy-schema.ts';
import { MAX_TIMER_MESSAGE, MAX_TIMER_MS } from '../core/timer-limit.ts';

// The `mqtt` section of the gateway config: the embedded broker, its listeners and limits.
// (Split from schema.ts to keep files small; the gateway schema imports it.)

export const port = z.int().min(0).max(65535);

export const logLevel = z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

/**
 * `enabled` takes true or false; empty (as `${VAR:+true}` leaves it when VAR is unset)
 * means false, so a bridge can be switched on by the presence of a variable.
 */
export const enabled = z
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
      description: `Most open sockets on the ${listener} at once; more are closed as they arrive and counted as \`mqtt.connections.refused{reason=listener_full}\`. When absent, derived from the process's open-file limit (RLIMIT_NOFILE, \`ulimit -n\`): (limit − max(256, limit/10)) / number of listeners, so that the listeners together leave room for the buffer, Kafka, Postgres and Redis.`,
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

const tlsSchema = lazySchema(() =>
  z
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
    }),
);

const websocketSchema = lazySchema(() =>
  z.strictObject({
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
  }),
);

export function aclSchema(publish: string, subscribe: string) {
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

const WEEK = 7 * 24 * 3600;

/** A session expiry in seconds: 1 s to MQTT 5's longest finite interval, a week by default. */
const sessionExpiry = (description: string) =>
  z
    .int()
    .min(1)
    .max(0xffff_fffe)
    .default(WEEK)
    .meta({ description, examples: [WEEK] });

const cap = (what: string, refusal: string, fallback: number) =>
  z
    .int()
    .min(1)
    .default(fallback)
    .meta({ description: `${what}; ${refusal}`, examples: [fallback] });

const SUBACK_REFUSAL = 'a SUBSCRIBE past it gets SUBACK 0x80 (MQTT 3.1.1) or 0x97 Quota exceeded (MQTT 5) for that filter.';
const RETAIN_REFUSAL =
  'a retained PUBLISH past it is refused with PUBACK 0x97 Quota exceeded (MQTT 5; the message is not taken at all) or, under MQTT 3.1.1 (which has no negative PUBACK), taken as an ordinary message: delivered and buffered, not retained.';
const QUEUE_REFUSAL = 'a message past it is not queued for that session (dropped for it alone and counted); other subscribers still get it.';

/** Bounds on what clients can make the broker keep (`mqtt.limits`). */
const stateLimitsSchema = lazySchema(() =>
  z
    .strictObject({
      subscriptionsPerClient: cap('Most subscriptions one client may hold', SUBACK_REFUSAL, 100),
      retainedPerClient: cap('Most retained messages one client may have stored (counted by the client id that published them)', RETAIN_REFUSAL, 100),
      retainedBytesPerClient: cap('Most payload bytes of retained messages one client may have stored', RETAIN_REFUSAL, 1024 * 1024),
      retainedMessages: cap('Most retained messages the gateway keeps in all', RETAIN_REFUSAL, 10_000),
      retainedBytes: cap('Most payload bytes of retained messages the gateway keeps in all', RETAIN_REFUSAL, 32 * 1024 * 1024),
      queuedPerSession: cap('Most QoS 1 and 2 messages queued for one persistent session while its client is offline', QUEUE_REFUSAL, 1000),
      queuedBytesPerSession: cap('Most payload bytes queued for one persistent session while its client is offline', QUEUE_REFUSAL, 4 * 1024 * 1024),
      sessionExpirySeconds: sessionExpiry(
        'MQTT 3.1.1: how long a persistent session (Clean Session 0) is kept after its client disconnected; then its subscriptions and queued messages are removed. MQTT 5 sessions follow their Session Expiry Interval, capped by `mqtt.maxSessionExpirySeconds`.',
      ),
    })
    .prefault({})
    .meta({
      description:
        'Bounds on the state clients make the embedded broker keep (subscriptions, retained messages, queues of offline sessions, sessions), so that one device cannot fill memory or disk. Queue and retained limits apply with `persistence: sqlite`; each refusal is counted as `mqtt.state.refused{limit}` and logged once per client and limit per minute.',
    }),
);

/** The embedded MQTT broker's settings (`mqtt:` in gateway.yaml). */
export const mqttSettingsSchema = lazySchema(() =>
  z
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
        .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
        .default(10_000)
        .meta({
          description:
            'A subscriber that stops reading is disconnected once its socket has stayed full this long (meanwhile delivery of the same messages to others waits). Counted as mqtt.connections.closed_slow.',
          examples: [10000],
        }),
      connectTimeoutMs: z
        .int()
        .min(100)
        .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
        .default(10_000)
        .meta({
          description:
            'A socket that has not delivered a whole CONNECT within this time of being accepted is closed, whatever it is still doing (TLS handshake, WebSocket upgrade, a slow CONNECT), and counted as `mqtt.connections.refused{reason=connect_timeout}`.',
          examples: [10000],
        }),
      maxSocketsPerAddress: z
        .int()
        .min(1)
        .default(1000)
        .meta({
          description:
            'Most sockets one source address may have open at once on all listeners together, counted from the moment they are accepted (before TLS, WebSocket or CONNECT); more are closed at once and counted as `mqtt.connections.refused{reason=too_many_sockets}`. Leave room for a whole site behind one NAT address.',
          examples: [1000],
        }),
      refusals: z
        .strictObject({
          logIntervalMs: z
            .int()
            .min(100)
            .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
            .default(60_000)
            .meta({
              description:
                "Refusals (connections, subscriptions, publishes, and messages discarded for a device's full Receive Maximum wait) are logged once per client or address and reason; further ones within this interval are counted and summed up in one line per interval.",
              examples: [60000],
            }),
          disconnectAfter: z
            .int()
            .min(1)
            .default(50)
            .meta({
              description:
                'A connected client whose subscriptions or publishes are refused this many times within `windowMs` is disconnected (counted as `mqtt.connections.closed_refusals`).',
              examples: [50],
            }),
          windowMs: z
            .int()
            .min(100)
            .default(10_000)
            .meta({ description: 'The window of `disconnectAfter`.', examples: [10000] }),
        })
        .prefault({})
        .meta({ description: 'How refusals are logged, and when a client refused too often is disconnected, so that no client can flood the log.' }),
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
              description: 'Password checks waiting for a turn; a login past it is refused with "server unavailable" and tries again later. Waiting checks take turns by address.',
              examples: [256],
            }),
          perAddress: z
            .int()
            .min(1)
            .default(32)
            .meta({
              description: 'Password checks from one address running or waiting at once; more are refused with "server unavailable". Leave room for a site behind one NAT address.',
              examples: [32],
            }),
          perUsername: z
            .int()
            .min(1)
            .default(4)
            .meta({
              description:
                'Password checks for one username (for a credential whose pattern several usernames share, for all of them together) running or waiting at once, from all addresses together; more are refused with "server unavailable".',
              examples: [4],
            }),
        })
        .prefault({})
        .meta({
          description: "Bounds on the password checking that connecting clients can cause, so that a flood of logins cannot guess in parallel or slow down everyone else's login.",
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
      maxSessionExpirySeconds: sessionExpiry(
        'MQTT 5: the longest Session Expiry Interval a client may ask for; a longer one (or "never") is cut to this and the client told so in CONNACK. MQTT 3.1.1 persistent sessions expire after `mqtt.limits.sessionExpirySeconds`.',
      ),
      limits: stateLimitsSchema(),
      maxKeepAliveSeconds: z
        .int()
        .min(1)
        .max(65535)
        .optional()
        .meta({
          description:
            'The longest keep alive a device may ask for. An MQTT 5 device asking for more, or for none (0), is given this one in CONNACK (Server Keep Alive) and disconnected when silent for 1.5 times it; an MQTT 3.1.1 device asking for more or none is refused ("identifier rejected", as Mosquitto does). No limit when absent.',
          examples: [300],
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
      tls: tlsSchema().optional().meta({ description: 'MQTT over TLS (mqtts) on its own port; off when absent.' }),
      websocket: websocketSchema().optional().meta({ description: 'MQTT over WebSocket (ws) on its own port; off when absent.' }),
    })
    .prefault({})
    .meta({ description: 'The embedded MQTT broker devices connect to.' }),
);
