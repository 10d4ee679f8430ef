import { connect, type MqttClient } from 'mqtt';

/**
 * Simulated devices: a windowed QoS 1 load generator that survives its broker dying.
 *
 * Each device publishes `{"device": <clientId>, "seq": n}` to `devices/<clientId>/telemetry/seq`
 * with its own sequence numbers from 0, keeps at most `window` messages in flight, and counts a
 * seq as acknowledged only when its PUBACK arrived (publishAsync resolved). Nothing is persisted
 * by the broker (aedes keeps sessions in memory), so on a lost connection the device reconnects
 * (mqtt.js, every `reconnectPeriodMs`) and publishes again, from its own record and in seq order,
 * every seq sent so far without a PUBACK, before any new seq. mqtt.js's own resend of its
 * outgoing store is switched off (the store is emptied when the connection closes), so the only
 * retransmissions are the device's, under new packet ids.
 *
 * Within one connection a device therefore sends strictly increasing seqs; the seqs of a later
 * connection that are below the highest seq sent before are exactly those not acknowledged yet.
 */
export interface FleetOptions {
  /** mqtt://host:port of the broker; the same address across restarts. */
  readonly url: string;
  readonly devices: number;
  /** Messages over all devices; spread as evenly as possible (the first devices take the remainder). */
  readonly total: number;
  /** Most unacknowledged messages a device has in flight on its connection. */
  readonly window: number;
  readonly clientIdPrefix: string;
  readonly reconnectPeriodMs?: number;
  /**
   * Asked before a device sends a seq for the first time (re-publishes are never held back);
   * false holds the device until the callback it gave `onAvailable` is called. Shapes the load.
   */
  readonly pacer?: Pacer;
}

export interface Pacer {
  take(): boolean;
  /** Registers a callback for when `take` may succeed again. */
  onAvailable(wake: () => void): void;
}

export interface DeviceStats {
  readonly clientId: string;
  readonly quota: number;
  /** Seqs whose PUBACK the device received. */
  readonly acked: ReadonlySet<number>;
  /** PUBLISH packets sent, first sends and re-publishes. */
  readonly published: number;
  /** Re-publishes of seqs that were sent before without a PUBACK. */
  readonly republished: number;
  /** CONNACKs received. */
  readonly connections: number;
  /** Messages sent on the current connection and not acknowledged yet. */
  readonly inFlight: number;
}

export function topicOf(clientId: string): string {
  return `devices/${clientId}/telemetry/seq`;
}

export function payloadOf(clientId: string, seq: number): Buffer {
  return Buffer.from(JSON.stringify({ device: clientId, seq }));
}

class SimulatedDevice implements DeviceStats {
  readonly clientId: string;
  readonly quota: number;
  readonly acked = new Set<number>();
  published = 0;
  republished = 0;
  connections = 0;
  readonly #window: number;
  readonly #pacer: Pacer | undefined;
  readonly #client: MqttClient;
  readonly #topic: string;
  /** Seqs on the current connection without a PUBACK yet. */
  readonly #inFlight = new Set<number>();
  /** Seqs to publish again on this connection, increasing. */
  #resend: number[] = [];
  #resendAt = 0;
  /** Next seq never sent. */
  #next = 0;
  #online = false;
  #waitingForPacer = false;
  #finish: (() => void) | undefined;
  readonly done: Promise<void>;

  constructor(clientId: string, quota: number, options: FleetOptions) {
    this.clientId = clientId;
    this.quota = quota;
    this.#window = options.window;
    this.#pacer = options.pacer;
    this.#topic = topicOf(clientId);
    this.done = new Promise<void>((resolve) => {
      this.#finish = resolve;
    });
    if (quota === 0) this.#finish?.();
    this.#client = connect(options.url, {
      clientId,
      clean: true,
      protocolVersion: 4,
      reconnectPeriod: options.reconnectPeriodMs ?? 200,
      connectTimeout: 5_000,
      keepalive: 30,
    });
    this.#client.on('connect', () => this.#onConnect());
    this.#client.on('close', () => this.#onClose());
    // ECONNREFUSED while the gateway restarts, ECONNRESET when it dies: reconnecting handles both.
    this.#client.on('error', () => {});
  }

  get inFlight(): number {
    return this.#inFlight.size;
  }

  get complete(): boolean {
    return this.acked.size === this.quota;
  }

  async close(): Promise<void> {
    await this.#client.endAsync(true);
  }

  #onConnect(): void {
    this.connections += 1;
    this.#online = true;
    this.#inFlight.clear();
    this.#resend = [];
    this.#resendAt = 0;
    for (let seq = 0; seq < this.#next; seq++) if (!this.acked.has(seq)) this.#resend.push(seq);
    this.#pump();
  }

  #onClose(): void {
    this.#online = false;
    this.#inFlight.clear();
    // Drop what mqtt.js kept for its own resend on reconnect: the device re-publishes from its
    // record instead. The dropped publishAsync promises reject ("Message removed").
    for (const id of Object.keys(this.#client.outgoing)) this.#client.removeOutgoingMessage(Number(id));
  }

  #pump(): void {
    while (this.#online && this.#inFlight.size < this.#window) {
      let seq: number;
      if (this.#resendAt < this.#resend.length) {
        seq = this.#resend[this.#resendAt++] as number;
        this.republished += 1;
      } else if (this.#next < this.quota) {
        if (this.#pacer !== undefined && !this.#pacer.take()) {
          if (!this.#waitingForPacer) {
            this.#waitingForPacer = true;
            this.#pacer.onAvailable(() => {
              this.#waitingForPacer = false;
              this.#pump();
            });
          }
          return;
        }
        seq = this.#next++;
      } else {
        return;
      }
      this.#send(seq);
    }
  }

  #send(seq: number): void {
    this.#inFlight.add(seq);
    this.published += 1;
    this.#client.publishAsync(this.#topic, payloadOf(this.clientId, seq), { qos: 1 }).then(
      () => {
        // The PUBACK arrived: the gateway took responsibility for this message.
        this.acked.add(seq);
        this.#inFlight.delete(seq);
        if (this.complete) this.#finish?.();
        this.#pump();
      },
      () => {
        // The connection closed before the PUBACK: the seq is published again after reconnecting.
      },
    );
  }
}

export interface Fleet {
  readonly devices: readonly DeviceStats[];
  /** Resolves when every device has a PUBACK for every one of its seqs. */
  readonly done: Promise<void>;
  acknowledged(): number;
  inFlight(): number;
  close(): Promise<void>;
}

export function startFleet(options: FleetOptions): Fleet {
  const base = Math.floor(options.total / options.devices);
  const extra = options.total % options.devices;
  const devices = Array.from(
    { length: options.devices },
    (_, i) => new SimulatedDevice(`${options.clientIdPrefix}${String(i).padStart(3, '0')}`, base + (i < extra ? 1 : 0), options),
  );
  return {
    devices,
    done: Promise.all(devices.map((d) => d.done)).then(() => {}),
    acknowledged: () => devices.reduce((n, d) => n + d.acked.size, 0),
    inFlight: () => devices.reduce((n, d) => n + d.inFlight, 0),
    close: async () => {
      await Promise.all(devices.map((d) => d.close()));
    },
  };
}

/**
 * A budget of first sends shared by a fleet: at most `limit` seqs started in all; the test
 * raises the limit to release more load. Re-publishes are never held. Waiting devices are
 * woken when the limit is raised.
 */
export class LoadPacer implements Pacer {
  #limit: number;
  #issued = 0;
  #waiting: (() => void)[] = [];

  constructor(limit = Number.POSITIVE_INFINITY) {
    this.#limit = limit;
  }

  /** Seqs started so far. */
  get issued(): number {
    return this.#issued;
  }

  /** Allows `limit` first sends in all. */
  setLimit(limit: number): void {
    this.#limit = limit;
    const waiting = this.#waiting;
    this.#waiting = [];
    for (const wake of waiting) wake();
  }

  take(): boolean {
    if (this.#issued >= this.#limit) return false;
    this.#issued += 1;
    return true;
  }

  onAvailable(wake: () => void): void {
    this.#waiting.push(wake);
  }

  stop(): void {
    this.#waiting = [];
  }
}
