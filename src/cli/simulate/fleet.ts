import { type DeviceEvents, type DeviceLogin, SimDevice } from './device.ts';
import { LatencyHistogram } from './latency.ts';
import { TokenBucket } from './token-bucket.ts';

export interface FleetOptions {
  /** mqtt://host:port of the broker. */
  readonly url: string;
  readonly clientIds: readonly string[];
  readonly login?: DeviceLogin;
  readonly qos: 0 | 1 | 2;
  /** mqtt.js' protocolVersion (4 is MQTT 3.1.1, the default). */
  readonly protocolVersion?: 4 | 5;
  /** Messages per second over all devices; 0: as fast as each device's window allows. */
  readonly ratePerSec: number;
  /** Most unsettled messages one device has in flight. */
  readonly window: number;
  /** Publishes stop after this many messages in all; without it, only `stop()` ends the run. */
  readonly count?: number;
  readonly topic: (clientId: string) => string;
  readonly payload: (device: number, seq: number) => Buffer;
  /** After publishing stops, how long outstanding messages may take to settle. */
  readonly drainTimeoutMs: number;
  readonly connectTimeoutMs?: number;
  /**
   * QoS 0 only: after the last message each device publishes one QoS 1 message and the run
   * ends at its PUBACK, so the elapsed time covers the broker handling every message, not
   * just the publisher writing it to its socket.
   */
  readonly fence?: boolean;
}

export interface FleetResult {
  readonly devices: number;
  readonly connected: number;
  readonly sent: number;
  readonly acked: number;
  readonly failed: number;
  /** From the first publish to the last settlement (or the end of the drain wait). */
  readonly elapsedMs: number;
  readonly latency: LatencyHistogram;
  readonly connectionErrors: number;
  /** The distinct error messages seen, connection and publish alike, at most 10. */
  readonly errors: readonly string[];
}

/** No device could connect: the run never started. */
export class BrokerUnreachableError extends Error {
  override readonly cause: Error;

  constructor(cause: Error) {
    super(cause.message);
    this.cause = cause;
  }
}

/**
 * Simulated devices publishing over their own connections. Messages are handed out one slot
 * at a time, round-robin over the devices with room in their window, each slot after a token
 * of the shared bucket when a rate is set: so the total rate is spread over the devices and a
 * slow broker holds publishers back instead of growing a queue.
 */
export class Fleet implements DeviceEvents {
  readonly #options: FleetOptions;
  readonly #bucket: TokenBucket | undefined;
  readonly latency = new LatencyHistogram();
  #devices: SimDevice[] = [];
  /** One entry per free window slot, in the order slots are given out. */
  #ready: SimDevice[] = [];
  #readyAt = 0;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  #pumping = false;
  #sent = 0;
  #acked = 0;
  #failed = 0;
  #connectionErrors = 0;
  readonly #errors = new Set<string>();
  #startedAt = 0;
  #lastSettledAt = 0;
  #settledAll: (() => void) | undefined;

  constructor(options: FleetOptions) {
    this.#options = options;
    this.#bucket = options.ratePerSec > 0 ? new TokenBucket(options.ratePerSec, Math.max(1, options.ratePerSec / 20)) : undefined;
  }

  get sent(): number {
    return this.#sent;
  }

  get acked(): number {
    return this.#acked;
  }

  get failed(): number {
    return this.#failed;
  }

  /** Connects every device; throws BrokerUnreachableError when none could. */
  async connect(): Promise<void> {
    const { url, login = {}, connectTimeoutMs = 10_000, protocolVersion = 4 } = this.#options;
    const attempts = await Promise.allSettled(this.#options.clientIds.map((id, i) => SimDevice.connect(url, i, id, { ...login, protocolVersion }, this, connectTimeoutMs)));
    let firstError: Error | undefined;
    for (const attempt of attempts) {
      if (attempt.status === 'fulfilled') this.#devices.push(attempt.value);
      else {
        firstError ??= attempt.reason as Error;
        this.#connectionError(attempt.reason as Error);
      }
    }
    if (this.#devices.length === 0 && firstError !== undefined) throw new BrokerUnreachableError(firstError);
  }

  /** Publishes until the count is reached or `stop()`, then waits for outstanding messages and closes. */
  async run(): Promise<FleetResult> {
    this.#startedAt = performance.now();
    this.#lastSettledAt = this.#startedAt;
    for (let slot = 0; slot < this.#options.window; slot++) this.#ready.push(...this.#devices);
    const settled = new Promise<void>((resolve) => (this.#settledAll = resolve));
    this.#pump();
    await settled;
    const outstanding = () => this.#devices.reduce((n, d) => n + d.outstanding, 0);
    if (outstanding() > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, this.#options.drainTimeoutMs);
        this.#settledAll = () => {
          if (outstanding() > 0) return;
          clearTimeout(timer);
          resolve();
        };
      });
    }
    let elapsedMs = (outstanding() > 0 ? performance.now() : this.#lastSettledAt) - this.#startedAt;
    if (this.#options.fence === true && this.#options.qos === 0) {
      await Promise.all(this.#devices.map((d) => d.fence(this.#options.topic(d.clientId), Buffer.from('fence')).catch((e: Error) => this.#note(e))));
      elapsedMs = performance.now() - this.#startedAt;
    }
    await Promise.all(this.#devices.map((d) => d.close()));
    return {
      devices: this.#options.clientIds.length,
      connected: this.#devices.length,
      sent: this.#sent,
      acked: this.#acked,
      failed: this.#failed,
      elapsedMs,
      latency: this.latency,
      connectionErrors: this.#connectionErrors,
      errors: [...this.#errors],
    };
  }

  /** Stops publishing; `run()` then waits for outstanding messages. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#settledAll?.();
  }

  settled(device: SimDevice, error: Error | undefined, latencyMs: number): void {
    this.#lastSettledAt = performance.now();
    if (error === undefined) {
      this.#acked += 1;
      if (this.#options.qos > 0) this.latency.record(latencyMs);
    } else {
      this.#failed += 1;
      this.#note(error);
    }
    if (device.online) this.#ready.push(device);
    if (this.#stopped) this.#settledAll?.();
    else this.#pump();
  }

  lost(_device: SimDevice, error: Error): void {
    this.#connectionError(error);
    if (this.#devices.every((d) => !d.online)) this.stop();
  }

  #pump(): void {
    // A QoS 0 publish may settle synchronously, from inside the loop below: the loop sees that slot.
    if (this.#timer !== undefined || this.#pumping) return;
    this.#pumping = true;
    try {
      this.#fill();
    } finally {
      this.#pumping = false;
    }
  }

  #fill(): void {
    while (!this.#stopped) {
      if (this.#options.count !== undefined && this.#sent >= this.#options.count) {
        this.stop();
        return;
      }
      const device = this.#nextReady();
      if (device === undefined) return;
      if (this.#bucket !== undefined && !this.#bucket.take()) {
        this.#readyAt -= 1;
        this.#timer = setTimeout(() => {
          this.#timer = undefined;
          this.#pump();
        }, this.#bucket.waitMs());
        return;
      }
      this.#sent += 1;
      device.publish(this.#options.topic(device.clientId), (seq) => this.#options.payload(device.index, seq), this.#options.qos);
    }
  }

  #nextReady(): SimDevice | undefined {
    if (this.#readyAt > 4096 && this.#readyAt * 2 > this.#ready.length) {
      this.#ready = this.#ready.slice(this.#readyAt);
      this.#readyAt = 0;
    }
    while (this.#readyAt < this.#ready.length) {
      const device = this.#ready[this.#readyAt++] as SimDevice;
      if (device.online) return device;
    }
    return undefined;
  }

  #connectionError(error: Error): void {
    this.#connectionErrors += 1;
    this.#note(error);
  }

  #note(error: Error): void {
    if (this.#errors.size < 10) this.#errors.add(error.message);
  }
}
