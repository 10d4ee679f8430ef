import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { IClientOptions, MqttClient } from 'mqtt';
import { z } from 'zod';
import type { FileAt } from '../core/component.ts';
import { wrapError } from '../core/errors.ts';
import { MAX_TIMER_MESSAGE, MAX_TIMER_MS } from '../core/timer-limit.ts';

/**
 * Connection settings shared by the `mqttClient` source and sink: Ferry as a client of an
 * external broker (Mosquitto, EMQX, HiveMQ, ...) through mqtt.js.
 */
export const connectionFields = () => ({
  url: z
    .string()
    .regex(/^(mqtts?|wss?):\/\/[^/\s]+/, 'expected mqtt://host:port, mqtts://host:port, ws://host:port/path or wss://host:port/path')
    .superRefine((url, ctx) => {
      // The message never repeats the URL: it may hold a password.
      const problem = urlProblem(url);
      if (problem !== undefined) {
        ctx.addIssue({
          code: 'custom',
          message: `${problem}; percent-encode special characters in the username and password (# as %23, ? as %3F, / as %2F, @ as %40, % as %25), or give the password in the separate \`password:\` setting`,
        });
      }
    })
    .meta({ description: 'The broker: mqtt://, mqtts:// (TLS), ws:// or wss:// (WebSocket, with its path).', examples: ['mqtt://broker.example.com:1883', 'mqtts://broker:8883'] }),
  clientId: z
    .string()
    .min(1)
    .max(65535)
    .meta({
      description: 'MQTT client id. It names the persistent session on the broker, so it must be stable and unique per gateway (two clients with one id disconnect each other).',
      examples: ['ferry-site-7'],
    }),
  username: z
    .string()
    .min(1)
    .optional()
    .meta({ description: 'Username for the broker.', examples: ['ferry'] }),
  password: z
    .string()
    .optional()
    .meta({ description: 'Password for the broker; take it from the environment.', examples: ['${MQTT_PASSWORD}'] }),
  protocolVersion: z
    .union([z.literal(4), z.literal(5)])
    .default(4)
    .meta({ description: 'MQTT protocol: 4 is MQTT 3.1.1, 5 is MQTT 5.0.', examples: [5] }),
  keepaliveSec: z
    .int()
    .min(0)
    .max(65535)
    .default(30)
    .meta({ description: 'Keep-alive interval in seconds (0 turns it off).', examples: [30] }),
  connectTimeoutMs: z
    .int()
    .min(100)
    .max(MAX_TIMER_MS, MAX_TIMER_MESSAGE)
    .default(10_000)
    .meta({ description: "Longest wait for the broker's CONNACK.", examples: [10000] }),
  tls: z
    .strictObject({
      ca: z
        .string()
        .min(1)
        .optional()
        .meta({
          description: "PEM file (relative to the bridge file) of the CAs that sign the broker's certificate (the system's CAs when absent).",
          examples: ['/etc/ferry/broker-ca.crt'],
        }),
      cert: z
        .string()
        .min(1)
        .optional()
        .meta({ description: "PEM file (relative to the bridge file) of Ferry's client certificate, for brokers that require one.", examples: ['/etc/ferry/client.crt'] }),
      key: z
        .string()
        .min(1)
        .optional()
        .meta({ description: "PEM file (relative to the bridge file) of the client certificate's private key.", examples: ['/etc/ferry/client.key'] }),
      rejectUnauthorized: z
        .boolean()
        .default(true)
        .meta({ description: 'Refuse a broker whose certificate does not verify. Turn off only for tests.', examples: [true] }),
    })
    .superRefine((tls, ctx) => {
      if ((tls.cert === undefined) !== (tls.key === undefined)) ctx.addIssue({ code: 'custom', message: 'give both `cert` and `key`, or neither' });
    })
    .optional()
    .meta({ description: 'TLS files for mqtts:// and wss://, relative to the bridge file; `ferry validate` checks they can be read.' }),
});

const connection = () => z.strictObject(connectionFields());
export type ConnectionConfig = z.output<ReturnType<typeof connection>>;

/** The TLS files of a connection, for the check at config loading. */
export function tlsFiles(config: ConnectionConfig): FileAt[] {
  const tls = config.tls;
  if (tls === undefined) return [];
  return (['ca', 'cert', 'key'] as const).flatMap((key) => (tls[key] === undefined ? [] : [{ path: ['tls', key], file: tls[key] }]));
}

/** mqtt.js, loaded on first use so that a gateway without external-broker bridges does not pay for it. */
export async function loadMqtt(): Promise<typeof import('mqtt')> {
  return import('mqtt');
}

/**
 * mqtt.js options for a connection. mqtt.js never reconnects by itself (`reconnectPeriod: 0`):
 * the source reconnects with its own backoff, the sink opens a fresh client per attempt.
 */
export function clientOptions(config: ConnectionConfig, component: string, configDir = '.'): IClientOptions {
  const options: IClientOptions = {
    clientId: config.clientId,
    protocolVersion: config.protocolVersion,
    keepalive: config.keepaliveSec,
    connectTimeout: config.connectTimeoutMs,
    reconnectPeriod: 0,
    resubscribe: false,
    queueQoSZero: false,
  };
  if (config.username !== undefined) options.username = config.username;
  if (config.password !== undefined) options.password = config.password;
  if (config.tls !== undefined) {
    const read = (what: string, file: string | undefined) => {
      if (file === undefined) return undefined;
      try {
        return readFileSync(resolve(configDir, file));
      } catch (error) {
        throw wrapError('CONFIG_INVALID', `${component}: cannot read the TLS ${what} file '${file}'`, error, { component });
      }
    };
    const ca = read('ca', config.tls.ca);
    const cert = read('cert', config.tls.cert);
    const key = read('key', config.tls.key);
    if (ca !== undefined) options.ca = ca;
    if (cert !== undefined) options.cert = cert;
    if (key !== undefined) options.key = key;
    options.rejectUnauthorized = config.tls.rejectUnauthorized;
  }
  return options;
}

/** Names of the MQTT 5 reason codes a broker refuses with (SUBACK, PUBACK, DISCONNECT); mqtt.js' own table would load mqtt.js. */
const REASON_CODES: Readonly<Record<number, string>> = {
  128: 'unspecified error',
  129: 'malformed packet',
  130: 'protocol error',
  131: 'implementation specific error',
  135: 'not authorized',
  137: 'server busy',
  139: 'server shutting down',
  141: 'keep alive timeout',
  142: 'session taken over',
  143: 'topic filter invalid',
  144: 'topic name invalid',
  147: 'receive maximum exceeded',
  148: 'topic alias invalid',
  149: 'packet too large',
  150: 'message rate too high',
  151: 'quota exceeded',
  152: 'administrative action',
  153: 'payload format invalid',
  154: 'retain not supported',
  155: 'QoS not supported',
  158: 'shared subscriptions not supported',
  161: 'subscription identifiers not supported',
  162: 'wildcard subscriptions not supported',
};

/** A reason code as logs name it: `0x87 (not authorized)`. Under MQTT 3.1.1 a SUBACK refuses with 0x80, "failure". */
export function describeReasonCode(code: number): string {
  const name = REASON_CODES[code];
  return `0x${code.toString(16).padStart(2, '0')}${name === undefined ? '' : ` (${name})`}`;
}

/**
 * Why a broker URL is not one that WHATWG URL (and so mqtt.js) reads as the URL it looks
 * like, or undefined when it is. An unencoded `#`, `?` or `/` in a password ends the
 * authority early: the URL does not parse, or parses to another host with the rest of the
 * password in its path or fragment (issue: such a URL passed validation, mqtt.js connected to
 * the wrong host and the raw URL, password included, was logged on every reconnect).
 */
function urlProblem(url: string): string | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return 'is not a valid URL (or its port is not a number from 1 to 65535)';
  }
  if (parsed.hostname === '') return 'has no host';
  if (parsed.port === '0') return 'has port 0; give a port from 1 to 65535';
  if (parsed.hash !== '') return 'has a fragment (`#...`), which would cut a password short';
  // An `@` after the authority: the userinfo was cut short by a `/`, `?` or `#` in it.
  if (!/^[^:]+:\/\/[^/?#]*@/.test(url) && /@/.test(url)) return 'has an `@` after the host, which would cut a password short';
  return undefined;
}

/** The broker's address without credentials, for logs. */
export function describeUrl(url: string): string {
  try {
    const parsed = new URL(url);
    parsed.username = '';
    parsed.password = '';
    const described = parsed.toString().replace(/\/$/, '');
    // A password cut short by `/`, `?` or `#` leaves its rest after the host.
    if (!described.includes('@')) return described;
  } catch {
    // Redacted below: the URL may still hold credentials.
  }
  // Everything between the scheme and the last `@` may be credentials (like redactRedisUrl).
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)?.*@/is, '$1***@');
}

export type { MqttClient };
