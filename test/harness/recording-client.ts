import { type IClientOptions, type MqttClient, connect } from 'mqtt';

/** An mqtt.js client that writes down each message it gets as `topic payload`. */
export interface RecordingClient {
  readonly client: MqttClient;
  readonly sessionPresent: boolean;
  readonly seen: string[];
}

/** Connects (no reconnects), adds the client to `clients` for the caller's cleanup, and resolves on CONNACK. */
export async function connectRecording(url: string, options: IClientOptions, clients: MqttClient[]): Promise<RecordingClient> {
  const seen: string[] = [];
  let sessionPresent = false;
  const c = await connectListening(url, { reconnectPeriod: 0, connectTimeout: 5000, ...options }, (client) => {
    clients.push(client);
    client.on('message', (topic, payload) => seen.push(`${topic} ${payload.toString()}`));
    client.once('connect', (connack) => (sessionPresent = connack.sessionPresent));
  });
  return { client: c, sessionPresent, seen };
}

/**
 * Connects as mqtt.js's connectAsync does, with `listen` called before the CONNACK can arrive.
 * A resumed session's queue is sent right after the CONNACK, often in the same read, and mqtt.js
 * emits (and acknowledges) those messages before code awaiting connectAsync runs again: a
 * listener added after it misses them.
 */
export async function connectListening(url: string, options: IClientOptions, listen: (client: MqttClient) => void): Promise<MqttClient> {
  const client = connect(url, options);
  listen(client);
  await new Promise<void>((resolve, reject) => {
    const fail = (error: Error) => {
      client.off('connect', connected);
      client.off('error', fail);
      client.off('close', closed);
      reject(error);
    };
    const closed = () => fail(new Error(`${options.clientId ?? 'client'}: connection closed before CONNACK`));
    const connected = () => {
      client.off('error', fail);
      client.off('close', closed);
      resolve();
    };
    client.once('connect', connected);
    client.once('error', fail);
    client.once('close', closed);
  });
  return client;
}
