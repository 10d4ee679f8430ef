import { type Socket, createConnection } from 'node:net';
import type { DeviceStats } from './devices.ts';
import { payloadOf, topicOf } from './devices.ts';
import { connectPacket, publishPacket } from './mqtt-wire.ts';

/**
 * A device speaking MQTT 3.1.1 over a raw socket that resends as the specification says: on a
 * new connection (Clean Session 0) it first publishes again every QoS 1 message that has no
 * PUBACK yet, under its original packet id and with the DUP flag set [MQTT-3.3.1-1,
 * MQTT-4.4.0-1] (mqtt.js 5 resends without DUP). It gives a connection up when nothing came
 * back for `ackTimeoutMs` while it waited for a PUBACK, as embedded clients with a command
 * timeout do, so a gateway that stops answering makes it reconnect and resend.
 *
 * Publishes `{"device": <clientId>, "seq": n}` to `devices/<clientId>/telemetry/seq` (as
 * test/harness/devices.ts does, so sequence-check.ts reads the result), seq n under packet id
 * n + 1, at most `window` unacknowledged at once, one new seq per `intervalMs`.
 */
export interface ResendingDeviceOptions {
  readonly host: string;
  readonly port: number;
  readonly clientId: string;
  readonly quota: number;
  readonly window: number;
  readonly intervalMs: number;
  readonly ackTimeoutMs: number;
  /** A CONNECT without CONNACK for this long is given up too. */
  readonly connectTimeoutMs?: number;
}

export class ResendingDevice implements DeviceStats {
  readonly clientId: string;
  readonly quota: number;
  readonly acked = new Set<number>();
  published = 0;
  republished = 0;
  connections = 0;
  /** Connections given up because the gateway stopped answering. */
  givenUp = 0;
  readonly done: Promise<void>;
  readonly #options: ResendingDeviceOptions;
  /** Unacknowledged seqs by packet id, in the order sent. */
  readonly #unacked = new Map<number, number>();
  #next = 0;
  #socket: Socket | undefined;
  #online = false;
  #connectedAt = 0;
  #lastHeard = 0;
  #closed = false;
  #finish: () => void = () => {};
  readonly #timer: NodeJS.Timeout;

  constructor(options: ResendingDeviceOptions) {
    this.#options = options;
    this.clientId = options.clientId;
    this.quota = options.quota;
    this.done = new Promise<void>((resolve) => {
      this.#finish = resolve;
    });
    this.#connect();
    this.#timer = setInterval(() => this.#tick(), options.intervalMs);
  }

  get inFlight(): number {
    return this.#unacked.size;
  }

  close(): void {
    this.#closed = true;
    clearInterval(this.#timer);
    this.#socket?.destroy();
  }

  #connect(): void {
    if (this.#closed) return;
    const socket = createConnection({ host: this.#options.host, port: this.#options.port });
    this.#socket = socket;
    this.#online = false;
    this.#connectedAt = Date.now();
    this.#lastHeard = Date.now();
    let buffer = Buffer.alloc(0);
    socket.on('error', () => {});
    socket.on('close', () => {
      if (this.#socket !== socket) return;
      this.#online = false;
      setTimeout(() => this.#connect(), 100);
    });
    socket.on('data', (chunk: Buffer) => {
      if (this.#socket !== socket) return;
      buffer = Buffer.concat([buffer, chunk]);
      for (;;) {
        const parsed = nextPacket(buffer);
        if (parsed === undefined) break;
        buffer = buffer.subarray(parsed.length);
        this.#lastHeard = Date.now();
        this.#onPacket(parsed.type, parsed.body);
      }
    });
    socket.write(connectPacket(this.clientId, 60, false));
  }

  /** Gives the connection up and opens a new one (the old socket is closed with a FIN). */
  #giveUp(): void {
    this.givenUp += 1;
    const old = this.#socket;
    this.#socket = undefined;
    this.#online = false;
    old?.end();
    old?.destroy();
    setTimeout(() => this.#connect(), 100);
  }

  #onPacket(type: number, body: Buffer): void {
    if (type === 2) {
      if (body[1] !== 0) return; // refused: the close that follows reconnects
      this.connections += 1;
      this.#online = true;
      // Every unacknowledged message again, in order, same packet id, DUP set.
      for (const [id, seq] of this.#unacked) {
        this.published += 1;
        this.republished += 1;
        this.#socket?.write(publishPacket(topicOf(this.clientId), payloadOf(this.clientId, seq), { qos: 1, id, dup: true }));
      }
      return;
    }
    if (type === 4) {
      const id = body.readUInt16BE(0);
      const seq = this.#unacked.get(id);
      if (seq === undefined) return;
      this.#unacked.delete(id);
      this.acked.add(seq);
      if (this.acked.size === this.quota) this.#finish();
    }
  }

  #tick(): void {
    const now = Date.now();
    if (this.#socket !== undefined && !this.#online && now - this.#connectedAt > (this.#options.connectTimeoutMs ?? 15_000)) {
      this.#giveUp();
      return;
    }
    if (!this.#online) return;
    if (this.#unacked.size > 0 && now - this.#lastHeard > this.#options.ackTimeoutMs) {
      this.#giveUp();
      return;
    }
    if (this.#unacked.size >= this.#options.window || this.#next >= this.quota) return;
    const seq = this.#next++;
    const id = seq + 1;
    if (this.#unacked.size === 0) this.#lastHeard = now;
    this.#unacked.set(id, seq);
    this.published += 1;
    this.#socket?.write(publishPacket(topicOf(this.clientId), payloadOf(this.clientId, seq), { qos: 1, id }));
  }
}

/** The first whole packet in `buffer`: its type, body and length; undefined when incomplete. */
function nextPacket(buffer: Buffer): { type: number; body: Buffer; length: number } | undefined {
  if (buffer.length < 2) return undefined;
  let length = 0;
  let multiplier = 1;
  let at = 1;
  for (;;) {
    if (at >= buffer.length) return undefined;
    const byte = buffer[at++] as number;
    length += (byte & 0x7f) * multiplier;
    multiplier *= 128;
    if ((byte & 0x80) === 0) break;
  }
  if (buffer.length < at + length) return undefined;
  return { type: (buffer[0] as number) >> 4, body: buffer.subarray(at, at + length), length: at + length };
}
