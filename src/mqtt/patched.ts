import type { Aedes } from 'aedes';
import { FerryError } from '../core/errors.ts';
import { aedesInternals } from './aedes-internals.ts';
import { mqttPacketPatched } from './lean-mqtt-packet.ts';

/**
 * aedes 2.0.0-beta.1 runs with patches/aedes+2.0.0-beta.1.patch (aedes 1.2.0's security
 * fixes), and mqtt-packet with patches/mqtt-packet+9.0.2.patch, which `npm install` applies.
 * An install that skipped scripts has the bare packages: the broker then does not start rather
 * than run without them.
 */
export function assertPatched(aedes: Aedes): void {
  const internals = aedesInternals(aedes);
  const aedesPatched =
    Object.getPrototypeOf(internals.clients) === null &&
    typeof internals.maxInflightInbound === 'number' &&
    typeof internals.outboundQueueLimit === 'number' &&
    internals.pubackAfterStore === true &&
    typeof internals.resumeHeldLimit === 'number' &&
    internals.highestOverlappingQoS === true &&
    internals.protocolErrorsAnswered === true &&
    internals.uniquePacketIds === true &&
    internals.unsubscribeAuthorized === true &&
    internals.closedConnectsDropped === true &&
    typeof internals.now === 'function';
  const missing = !mqttPacketPatched()
    ? 'mqtt-packet lacks patches/mqtt-packet+9.0.2.patch (a repeated MQTT 5 property crashed the broker)'
    : !aedesPatched
      ? 'aedes lacks patches/aedes+2.0.0-beta.1.patch (security fixes and MQTT 5 behaviour), or has an older version of it'
      : undefined;
  if (missing === undefined) return;
  throw new FerryError(
    'INTERNAL',
    `the installed ${missing} (were install scripts skipped?): run \`npm ci\` without --ignore-scripts in the Ferry directory; in a project that installed Ferry, list ferry in package.json allowScripts (npm 12 and newer) and install again`,
  );
}
