import { connect, type MqttClient } from 'mqtt';

/** A command a device received. */
export interface ReceivedCommand {
  readonly topic: string;
  readonly payload: Buffer;
  readonly qos: number;
}

export interface CommandDevice {
  readonly client: MqttClient;
  readonly received: ReceivedCommand[];
  /** Resolves when `count` commands arrived in all (or rejects after `timeoutMs`). */
  waitFor(count: number, timeoutMs?: number): Promise<ReceivedCommand[]>;
  /** Sends the PUBACKs held back so far (with `holdAcks`), and acks at once from now on. */
  releaseAcks(): void;
  end(): Promise<void>;
}

export interface CommandDeviceOptions {
  readonly clientId: string;
  /** Topic filter subscribed at QoS 1 (skipped when the persistent session has it already). */
  readonly filter: string;
  /** false: a persistent session, kept by the broker while the device is away. */
  readonly clean?: boolean;
  /** Receive commands but hold their PUBACKs until `releaseAcks`. */
  readonly holdAcks?: boolean;
  readonly subscribe?: boolean;
}

/**
 * A device on the gateway's MQTT port taking commands with mqtt.js. mqtt.js sends a PUBACK
 * when `handleMessage` calls back, so holding that callback holds the PUBACK.
 */
export async function connectCommandDevice(url: string, options: CommandDeviceOptions): Promise<CommandDevice> {
  const received: ReceivedCommand[] = [];
  const held: (() => void)[] = [];
  let holding = options.holdAcks ?? false;
  let wake: (() => void) | undefined;
  // The handler is in place before CONNACK: a persistent session's queued messages follow it at once.
  const client = connect(url, { clientId: options.clientId, clean: options.clean ?? true, reconnectPeriod: 0 });
  client.handleMessage = (packet, callback) => {
    received.push({ topic: packet.topic, payload: Buffer.from(packet.payload), qos: packet.qos });
    wake?.();
    if (holding) held.push(() => callback());
    else callback();
  };
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', (error) => {
      client.end(true);
      reject(error);
    });
  });
  if (options.subscribe ?? true) await client.subscribeAsync(options.filter, { qos: 1 });
  return {
    client,
    received,
    waitFor: (count, timeoutMs = 30_000) =>
      new Promise((resolve, reject) => {
        const check = () => {
          if (received.length < count) return;
          clearTimeout(timer);
          wake = undefined;
          resolve(received);
        };
        const timer = setTimeout(() => {
          wake = undefined;
          reject(new Error(`${options.clientId} received ${received.length} of ${count} commands in ${timeoutMs} ms`));
        }, timeoutMs);
        wake = check;
        check();
      }),
    releaseAcks: () => {
      holding = false;
      for (const send of held.splice(0)) send();
    },
    // A connection the gateway already closed is ended at once: a graceful end waits for a
    // DISCONNECT round that can no longer happen.
    end: () => (client.connected ? client.endAsync() : client.endAsync(true)),
  };
}
