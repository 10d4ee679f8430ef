import type { GatewayConfig } from '../config/load.ts';
import { brokerStatePath } from '../mqtt/persistence/open.ts';
import { openFileLimit } from '../config/file-limit.ts';
import type { EmbeddedBrokerOptions } from '../mqtt/embedded-broker.ts';

/**
 * Each listener's `maxConnections` when the config gives none: the open-file limit less a
 * reserve of max(256, limit/10) for everything else the gateway opens (the buffer's and the
 * broker state's SQLite files, Kafka, Postgres and Redis connections, the admin server, logs),
 * shared evenly by the listeners. With `ulimit -n` 1024 and one listener: 768; 65536 and
 * three listeners: 19660 each. No default when the limit cannot be read (not Linux).
 */
export function defaultMaxConnections(fileLimit: number | undefined, listeners: number): number | undefined {
  if (fileLimit === undefined) return undefined;
  const reserve = Math.max(256, Math.ceil(fileLimit / 10));
  return Math.max(1, Math.floor((fileLimit - reserve) / listeners));
}

/** The optional parts of the broker's listener options, from `mqtt.maxConnections`, `mqtt.tls` and `mqtt.websocket`. */
export function brokerListeners(config: GatewayConfig, fileLimit = openFileLimit()): Pick<EmbeddedBrokerOptions, 'maxConnections' | 'tls' | 'websocket'> {
  const { mqtt, tlsPem } = config;
  const withTls = mqtt.tls !== undefined && tlsPem !== undefined;
  const fallback = defaultMaxConnections(fileLimit, 1 + (withTls ? 1 : 0) + (mqtt.websocket !== undefined ? 1 : 0));
  const limit = (max: number | undefined) => {
    const chosen = max ?? fallback;
    return chosen === undefined ? {} : { maxConnections: chosen };
  };
  const out: { -readonly [K in 'maxConnections' | 'tls' | 'websocket']?: EmbeddedBrokerOptions[K] } = limit(mqtt.maxConnections);
  if (mqtt.tls !== undefined && tlsPem !== undefined) {
    const { port, host, requireClientCert, identityFromCert } = mqtt.tls;
    out.tls = { port, host: host ?? mqtt.host, requireClientCert, identityFromCert, ...tlsPem, ...limit(mqtt.tls.maxConnections) };
  }
  if (mqtt.websocket !== undefined) {
    const { port, host, path, trustedProxies } = mqtt.websocket;
    out.websocket = { port, host: host ?? mqtt.host, path, trustedProxies, ...limit(mqtt.websocket.maxConnections) };
  }
  return out;
}

/** The broker's options that come from the config (listeners, timeouts, limits, where its state is kept); `onStateCorrupt`: see BrokerStateSettings.onCorrupt. */
export function brokerSettings(config: GatewayConfig, onStateCorrupt?: (error: Error) => void) {
  return {
    host: config.mqtt.host,
    port: config.mqtt.port,
    ...brokerListeners(config),
    connectTimeoutMs: config.mqtt.connectTimeoutMs,
    maxSocketsPerAddress: config.mqtt.maxSocketsPerAddress,
    refusals: config.mqtt.refusals,
    drainTimeoutMs: config.mqtt.slowSubscriberTimeoutMs,
    maxPacketBytes: config.mqtt.maxPacketBytes,
    topicAliasMaximum: config.mqtt.topicAliasMaximum,
    maxSessionExpirySeconds: config.mqtt.maxSessionExpirySeconds,
    limits: config.mqtt.limits,
    ...(config.mqtt.maxKeepAliveSeconds === undefined ? {} : { maxKeepAliveSeconds: config.mqtt.maxKeepAliveSeconds }),
    topicLimits: { maxLength: config.mqtt.maxTopicLength, maxLevels: config.mqtt.maxTopicLevels },
    ...(config.mqtt.persistence === 'sqlite' ? { state: { path: brokerStatePath(config.dataDirPath), synchronous: config.buffer.synchronous, onCorrupt: onStateCorrupt } } : {}),
  } satisfies Partial<EmbeddedBrokerOptions>;
}
