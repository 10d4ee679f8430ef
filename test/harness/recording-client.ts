import { type IClientOptions, type MqttClient, connect } from 'mqtt';

/** An mqtt.js client that writes down each message it gets as `topic payload`. */
export interface RecordingClient {
  readonly client: MqttClient;
  readonly sessionPresent: boolean;
  readonly seen: string[];
}

/** Connects (no reconnects), adds the client to `clients` for the caller's cleanup, and resolves on CONNACK. */
export async function connectRecording(url: string, options: IClientOptions, clients: MqttClient[]): Promise<RecordingClient> {
  const c = connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...options });
  clients.push(c);
  const seen: string[] = [];
  c.on('message', (topic, payload) => seen.push(`${topic} ${payload.toString()}`));
  const connack = await new Promise<{ sessionPresent: boolean }>((resolve, reject) => {
    c.once('connect', resolve);
    c.once('error', reject);
  });
  return { client: c, sessionPresent: connack.sessionPresent, seen };
}
