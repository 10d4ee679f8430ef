import type { Socket } from 'node:net';

export type SocketRefusal =
  /** The address already has `maxPerAddress` sockets open on the broker's listeners. */
  | 'too_many_sockets'
  /** No complete CONNECT within the connect timeout of the socket's accept (TLS handshake and WebSocket upgrade included). */
  | 'connect_timeout';

export interface SocketGateOptions {
  /** Most sockets one address may have open at once, over all listeners. */
  readonly maxPerAddress: number;
  /** Time from accept to a complete CONNECT. */
  readonly connectTimeoutMs: number;
  /** Called once for each socket refused or timed out (after it was destroyed). */
  onRefuse(reason: SocketRefusal, address: string, protocol: string): void;
}

interface Held {
  readonly address: string;
  readonly protocol: string;
  deadline: NodeJS.Timeout | undefined;
}

/**
 * Admits sockets to the broker's listeners from the moment they are accepted, before any
 * byte is read (issue 16: 20,000 idle TLS sockets from four addresses filled the process's
 * file limit, with nothing logged or counted, and held their descriptors for 120 s, a slow
 * WebSocket upgrade for 72 s). It counts open sockets per address and destroys one over
 * `maxPerAddress` at once, and destroys a socket that has not delivered a whole CONNECT
 * within `connectTimeoutMs` of its accept, whatever it is still doing (TLS handshake, HTTP
 * upgrade, or sending the CONNECT slowly). One gate serves all listeners of a broker, so
 * the per-address count covers them together.
 */
export class SocketGate {
  readonly #options: SocketGateOptions;
  readonly #perAddress = new Map<string, number>();
  readonly #held = new WeakMap<Socket, Held>();

  constructor(options: SocketGateOptions) {
    this.#options = options;
  }

  /** Sockets open per address (for tests and status). */
  openFrom(address: string): number {
    return this.#perAddress.get(address) ?? 0;
  }

  /**
   * A socket just accepted from the peer `address`: starts its connect deadline and, unless
   * `counted` is false (a trusted proxy, whose clients are counted by `count` once known),
   * counts it against its address. False when it was refused (it is destroyed).
   */
  accept(socket: Socket, address: string, protocol: string, counted = true): boolean {
    const held: Held = { address, protocol, deadline: undefined };
    if (counted && !this.#take(socket, address, protocol)) return false;
    held.deadline = setTimeout(() => this.#expire(socket, held), this.#options.connectTimeoutMs);
    // The deadline must not keep a stopping process alive.
    held.deadline.unref();
    this.#held.set(socket, held);
    socket.once('close', () => {
      clearTimeout(held.deadline);
      held.deadline = undefined;
    });
    return true;
  }

  /**
   * Counts a socket that accept() did not count, under the client address learnt later (the
   * X-Forwarded-For of a trusted proxy's WebSocket upgrade). False when that address is over
   * its limit: the socket is destroyed.
   */
  count(socket: Socket, address: string, protocol: string): boolean {
    return this.#take(socket, address, protocol);
  }

  /** The socket delivered its CONNECT: its deadline is over (keep-alive takes over). */
  connected(socket: Socket): void {
    const held = this.#held.get(socket);
    if (held === undefined) return;
    clearTimeout(held.deadline);
    held.deadline = undefined;
  }

  #take(socket: Socket, address: string, protocol: string): boolean {
    const open = this.#perAddress.get(address) ?? 0;
    if (open >= this.#options.maxPerAddress) {
      socket.destroy();
      this.#options.onRefuse('too_many_sockets', address, protocol);
      return false;
    }
    this.#perAddress.set(address, open + 1);
    socket.once('close', () => {
      const left = (this.#perAddress.get(address) ?? 1) - 1;
      if (left <= 0) this.#perAddress.delete(address);
      else this.#perAddress.set(address, left);
    });
    return true;
  }

  #expire(socket: Socket, held: Held): void {
    held.deadline = undefined;
    if (socket.destroyed) return;
    socket.destroy();
    this.#options.onRefuse('connect_timeout', held.address, held.protocol);
  }
}
