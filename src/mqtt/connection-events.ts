import type { EventEmitter } from 'node:events';
import type { Aedes } from 'aedes';
import type { Logger } from 'pino';
import type { Counters } from '../core/component.ts';
import { type DiscardReason, onPublishDiscarded } from './aedes-internals.ts';
import { countProtocolRefusal } from './protocol-refusals.ts';
import type { RefusalLog } from './refusal-log.ts';

const DISCARD_REASONS: Readonly<Record<DiscardReason, string>> = {
  packetTooLarge: 'packet_too_large',
  receiveQueueFull: 'receive_queue_full',
  noShareMember: 'no_share_member',
  expired: 'expired',
};

/**
 * Counts and logs (at debug) device connections opening, closing and failing; a connection
 * ended for a protocol error is counted as refused and logged through `refusals`.
 */
export function watchConnections(aedes: Aedes, logger: Logger, counters: Counters, refusals: RefusalLog): void {
  // aedes reports a drain timeout once per write that was waiting: count each client once.
  const slow = new WeakSet<object>();
  aedes.on('client', (client) => {
    counters.count('mqtt.connections.opened');
    logger.debug({ clientId: client.id }, 'device connected');
  });
  aedes.on('clientDisconnect', (client) => {
    counters.count('mqtt.connections.closed');
    logger.debug({ clientId: client.id }, 'device disconnected');
  });
  aedes.on('clientError', (client, error) => {
    // aedes' drainTimeout: the client stopped reading what it subscribed to.
    if (error.message === 'drain timeout') {
      if (slow.has(client)) return;
      slow.add(client);
      counters.count('mqtt.connections.closed_slow');
      logger.warn({ clientId: client.id }, 'subscriber stopped reading: disconnected so it does not hold up delivery to others');
      return;
    }
    if (countProtocolRefusal(counters, refusals, client, error, false)) return;
    counters.count('mqtt.connections.errors');
    logger.debug({ clientId: client.id, err: error }, 'device connection error');
  });
  // Session expiry and delayed wills (MQTT 5) report persistence failures here.
  // (aedes' types do not declare the event: it is heard through the EventEmitter aedes is.)
  const events: EventEmitter = aedes;
  events.on('error', (error: Error) => {
    counters.count('mqtt.broker.errors');
    logger.warn({ err: error }, 'broker error');
  });
  onPublishDiscarded(aedes, (topic, clientId, reason) => {
    counters.count('mqtt.deliveries.discarded', { reason: DISCARD_REASONS[reason] });
    logger.debug({ clientId, topic, reason }, 'message not sent to a client');
  });
  aedes.on('connectionError', (client, error) => {
    if (countProtocolRefusal(counters, refusals, client, error, true)) return;
    counters.count('mqtt.connections.errors');
    logger.debug({ err: error }, 'connection error before CONNECT');
  });
}
