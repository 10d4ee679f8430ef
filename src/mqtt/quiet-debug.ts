// mqtt-packet, which parses and writes every MQTT packet for aedes, calls its `debug` logger
// about 40 times per PUBLISH it parses and a dozen per packet it writes. A logger of the
// `debug` package that is off still takes its arguments as a rest array: in a profile of the
// gateway end to end that was 7% of all the memory it allocated and 1% of its CPU, for
// nothing. So mqtt-packet is loaded here, before aedes (src/mqtt/embedded-broker.ts imports
// aedes only after this ran), with `debug` handing it a function that does nothing for each
// namespace that is off when it loads; its namespaces that DEBUG turns on (e.g.
// DEBUG=mqtt-packet:*) get the real logger. Only mqtt-packet's own loggers change, and only
// those made now: `debug` is put back before this returns.
import { createRequire } from 'node:module';

type CreateDebug = ((namespace: string) => Debugger) & Record<string, unknown>;

interface Debugger {
  (...args: unknown[]): void;
  enabled: boolean;
  namespace: string;
}

const require = createRequire(import.meta.url);

/** Whether mqtt-packet got loggers that do nothing (false: it was loaded before, and keeps what it has). */
export function loadQuietMqttPacket(): boolean {
  const packetPath = require.resolve('mqtt-packet');
  if (require.cache[packetPath] !== undefined) return false;
  const debugPath = createRequire(packetPath).resolve('debug');
  const createDebug = require(debugPath) as CreateDebug;
  const cached = require.cache[debugPath];
  if (cached === undefined) return false;
  const quietly = Object.assign((namespace: string): Debugger => {
    const logger = createDebug(namespace);
    if (logger.enabled) return logger;
    return Object.assign(() => {}, { enabled: false, namespace });
  }, createDebug);
  cached.exports = quietly;
  try {
    require(packetPath);
  } finally {
    cached.exports = createDebug;
  }
  return true;
}
