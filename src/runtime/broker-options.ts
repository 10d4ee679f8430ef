import type { GatewayConfig } from '../config/load.ts';
import type { EmbeddedBrokerOptions } from '../mqtt/embedded-broker.ts';

/** The optional parts of the broker's listener options, from `mqtt.maxConnections`, `mqtt.tls` and `mqtt.websocket`. */
export function brokerListeners(config: GatewayConfig): Pick<EmbeddedBrokerOptions, 'maxConnections' | 'tls' | 'websocket'> {
  const { mqtt, tlsPem } = config;
  const limit = (max: number | undefined) => (max === undefined ? {} : { maxConnections: max });
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
