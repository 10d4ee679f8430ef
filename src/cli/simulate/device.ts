import { connect, type IClientOptions, type MqttClient } from 'mqtt';

export interface DeviceEvents {
  /** A message settled: acknowledged (QoS ≥ 1) or written to the socket (QoS 0), or failed. */
  settled(device: SimDevice, error: Error | undefined, latencyMs: number): void;
  /** The connection closed while the fleet was still running. */
  lost(device: SimDevice, error: Error): void;
}

export interface DeviceLogin {
  readonly username?: string;
  readonly password?: string;
  /** mqtt.js' protocolVersion: 4 (MQTT 3.1.1, the default) or 5. */
  readonly protocolVersion?: 4 | 5;
}

/** One simulated device: its own MQTT connection, no reconnects, its own sequence numbers. */
export class SimDevice {
  readonly index: number;
  readonly clientId: string;
  readonly #client: MqttClient;
  readonly #events: DeviceEvents;
  /** Sent and not settled yet: local id → send time. */
  readonly #outstanding = new Map<number, number>();
  #nextId = 0;
  #seq = 0;
  #online = true;
  #closing = false;

  private constructor(index: number, clientId: string, client: MqttClient, events: DeviceEvents) {
    this.index = index;
    this.clientId = clientId;
    this.#client = client;
    this.#events = events;
    client.on('error', () => {});
    client.on('close', () => this.#onClose());
  }

  /** Resolves when the CONNACK arrived; rejects with the broker's or the socket's error. */
  static connect(url: string, index: number, clientId: string, login: DeviceLogin, events: DeviceEvents, timeoutMs: number): Promise<SimDevice> {
    const options: IClientOptions = { clientId, protocolVersion: login.protocolVersion ?? 4, clean: true, reconnectPeriod: 0, connectTimeout: timeoutMs, keepalive: 60 };
    if (login.username !== undefined) options.username = login.username;
    if (login.password !== undefined) options.password = login.password;
    const client = connect(url, options);
    return new Promise((resolve, reject) => {
      const onError = (error: Error) => fail(error);
      const onClose = () => fail(new Error(`no CONNACK within ${timeoutMs} ms`));
      const onConnect = () => {
        settle();
        resolve(new SimDevice(index, clientId, client, events));
      };
      // Only our own listeners go: mqtt.js keeps its timers in listeners of its own.
      const settle = () => {
        client.off('error', onError);
        client.off('close', onClose);
        client.off('connect', onConnect);
      };
      const fail = (error: Error) => {
        settle();
        client.on('error', () => {});
        client.end(true);
        reject(error);
      };
      client.once('error', onError);
      client.once('close', onClose);
      client.once('connect', onConnect);
    });
  }

  get online(): boolean {
    return this.#online;
  }

  get outstanding(): number {
    return this.#outstanding.size;
  }

  /** Publishes the device's next message; returns its seq. */
  publish(topic: string, payload: (seq: number) => Buffer, qos: 0 | 1 | 2): number {
    const seq = this.#seq++;
    const id = this.#nextId++;
    this.#outstanding.set(id, performance.now());
    this.#client.publish(topic, payload(seq), { qos }, (error) => this.#settle(id, error ?? undefined));
    return seq;
  }

  /**
   * One QoS 1 message whose PUBACK says the broker has handled everything this connection sent
   * before it (MQTT keeps a connection's order): how QoS 0 throughput is measured at the publisher.
   */
  async fence(topic: string, payload: Buffer): Promise<void> {
    if (this.#online) await this.#client.publishAsync(topic, payload, { qos: 1 });
  }

  /** Gives up on every outstanding message (counted as failed) and closes the connection. */
  async close(): Promise<void> {
    this.#closing = true;
    for (const id of [...this.#outstanding.keys()]) this.#settle(id, new Error('not acknowledged before the end'));
    await this.#client.endAsync(true);
  }

  #settle(id: number, error: Error | undefined): void {
    const sentAt = this.#outstanding.get(id);
    if (sentAt === undefined) return;
    this.#outstanding.delete(id);
    this.#events.settled(this, error, performance.now() - sentAt);
  }

  #onClose(): void {
    if (!this.#online) return;
    this.#online = false;
    if (this.#closing) return;
    const lost = new Error('connection closed by the broker');
    for (const id of [...this.#outstanding.keys()]) this.#settle(id, lost);
    this.#events.lost(this, lost);
  }
}
