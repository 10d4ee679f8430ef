import type { EventEmitter } from 'node:events';
import type { Aedes } from 'aedes';
import type { Logger } from 'pino';
import type { Counters } from '../core/component.ts';
import { type DiscardReason, aedesInternals, onPublishDiscarded } from './aedes-internals.ts';
import { countProtocolRefusal } from './protocol-refusals.ts';
import type { RefusalLog } from './refusal-log.ts';

const DISCARD_REASONS: Readonly<Record<DiscardReason, string>> = {
  packetTooLarge: 'packet_too_large',
  receiveQueueFull: 'receive_queue_full',
  noShareMember: 'no_share_member',
  expired: 'expired',
};

/** What an operator reads when a device's Receive Maximum wait overflows (an MQTT 5 clean session's messages only: a persistent session's stay queued). */
const RECEIVE_QUEUE_FULL =
  'messages to this device discarded: its Receive Maximum is reached with as many more waiting for it as the broker keeps (waitingLimit); ' +
  "raise the Receive Maximum in the device's CONNECT or have it acknowledge sooner, or give its CONNECT a Session Expiry Interval " +
  'above 0: a persistent session keeps such messages queued in broker.db';

/**
 * Counts and logs (at debug) device connections opening, closing and failing; a connection
 * ended for a protocol error is counted as refused and logged through `refusals`, as are
 * messages discarded because a device's Receive Maximum wait is full.
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
  const waitingLimit = aedesInternals(aedes).outboundQueueLimit;
  onPublishDiscarded(aedes, (topic, clientId, reason) => {
    counters.count('mqtt.deliveries.discarded', { reason: DISCARD_REASONS[reason] });
    // A device too slow for its Receive Maximum loses messages for as long as it stays slow: a
    // warning the operator can act on, once per client per interval with how many (not one a message).
    if (reason === 'receiveQueueFull') {
      refusals.refused({ who: { clientId }, reason: DISCARD_REASONS[reason], message: RECEIVE_QUEUE_FULL, detail: { topic, waitingLimit } });
      return;
    }
    logger.debug({ clientId, topic, reason }, 'message not sent to a client');
  });
  aedes.on('connectionError', (client, error) => {
    if (countProtocolRefusal(counters, refusals, client, error, true)) return;
    counters.count('mqtt.connections.errors');
    logger.debug({ err: error }, 'connection error before CONNECT');
  });
}
