import type { IncomingMessage } from 'node:http';
import { type Server, type Socket, createServer as createTcpServer } from 'node:net';
import { once } from 'node:events';
import type { Duplex } from 'node:stream';
import type { Server as TlsServer, TLSSocket } from 'node:tls';
import type { WebSocketServer } from 'ws';
import { FerryError, wrapError } from '../core/errors.ts';
import type { SocketGate } from './socket-gate.ts';

export type ListenerProtocol = 'mqtt' | 'mqtts' | 'ws';

export interface ListenerOptions {
  readonly host: string;
  /** 0 picks a free port. */
  readonly port: number;
  /** Most open sockets at once; more are destroyed as they arrive. No limit when absent (the broker's options give every listener one derived from the file limit). */
  readonly maxConnections?: number;
}

export interface TlsSettings {
  /** PEM contents. */
  readonly cert: string | Buffer;
  readonly key: string | Buffer;
  /** PEM of the CAs client certificates must be signed by. */
  readonly ca?: string | Buffer;
  /** Refuse, at the handshake, clients without a certificate signed by `ca`. */
  readonly requireClientCert: boolean;
  /** A verified client certificate's subject CN is the client's username. */
  readonly identityFromCert: boolean;
  /**
   * Called with the TLS server once it is created, so that a reload can give it a renewed
   * certificate, key and CA with `setSecureContext` (src/runtime/tls-reload.ts): new handshakes
   * use them, open connections keep theirs.
   */
  readonly onServer?: (server: TlsServer) => void;
}

export type ListenerSpec =
  | (ListenerOptions & { readonly protocol: 'mqtt' })
  | (ListenerOptions & { readonly protocol: 'mqtts'; readonly tls: TlsSettings })
  | (ListenerOptions & { readonly protocol: 'ws'; readonly path: string; readonly maxPayloadBytes: number; readonly trustedProxies?: readonly string[] });

/** A new connection for the broker: the stream aedes reads and what is known about its peer. */
export interface Connection {
  readonly stream: Duplex;
  readonly address: string;
  /** The HTTP upgrade request of a WebSocket connection. */
  readonly request?: IncomingMessage;
  /** Subject CN of a client certificate verified against the listener's CA, when the listener takes identities from certificates. */
  readonly certName?: string;
  /** To be called when the connection's CONNECT arrived: ends the deadline its socket got at accept. */
  readonly connectArrived: () => void;
}

export type ListenerRefusal = 'listener_full' | 'bad_certificate';

export interface ListenerEvents {
  /**
   * Called synchronously as a connection opens, before its stream has been read, so the
   * stream can still be wrapped (guardConnection).
   */
  onConnection(connection: Connection): void;
  onRefuse(reason: ListenerRefusal, address: string): void;
  /** Counts sockets per address and bounds their time to CONNECT, from accept on (shared by all listeners of a broker). */
  readonly gate: SocketGate;
}

const COMPONENT: Record<ListenerProtocol, string> = { mqtt: 'mqtt broker', mqtts: 'mqtt tls listener', ws: 'mqtt websocket listener' };
const LABEL: Record<ListenerProtocol, string> = { mqtt: 'MQTT', mqtts: 'MQTT TLS', ws: 'MQTT WebSocket' };

export interface WebSocketListenerOptions extends ListenerOptions {
  readonly path: string;
  /** Reverse proxies whose X-Forwarded-For names the client (exact addresses). */
  readonly trustedProxies?: readonly string[];
}

/**
 * The client's address of a WebSocket upgrade: the peer's, unless the peer is a trusted
 * proxy; then the right-most address of X-Forwarded-For that is not a trusted proxy itself
 * (addresses left of it could have been written by the client).
 */
export function clientAddress(request: IncomingMessage, trustedProxies: readonly string[]): string {
  const peer = plainAddress(request.socket.remoteAddress ?? '');
  const trusted = new Set(trustedProxies.map(plainAddress));
  if (!trusted.has(peer)) return peer;
  const header = request.headers['x-forwarded-for'];
  const hops = (Array.isArray(header) ? header.join(',') : (header ?? ''))
    .split(',')
    .map((h) => plainAddress(h.trim()))
    .filter((h) => h !== '');
  for (let i = hops.length - 1; i >= 0; i--) if (!trusted.has(hops[i] as string)) return hops[i] as string;
  return hops[0] ?? peer;
}

/** 192.0.2.1 for ::ffff:192.0.2.1, so one client has one address whichever way it came. */
function plainAddress(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

/** One port of the broker: plain TCP, TLS or WebSocket. */
export class Listener {
  readonly protocol: ListenerProtocol;
  readonly host: string;
  readonly #server: Server;
  readonly #wss: WebSocketServer | undefined;
  readonly #requestedPort: number;
  #open = 0;

  private constructor(spec: ListenerSpec, server: Server, wss: WebSocketServer | undefined) {
    this.protocol = spec.protocol;
    this.host = spec.host;
    this.#requestedPort = spec.port;
    this.#server = server;
    this.#wss = wss;
  }

  /** Opens the listener; throws PORT_IN_USE or LISTEN_FAILED with the component named after the protocol. */
  static async open(spec: ListenerSpec, events: ListenerEvents): Promise<Listener> {
    const { server, wss } = await createListenerServer(spec, events);
    const listener = new Listener(spec, server, wss);
    // Runs after the TLS and HTTP servers' own 'connection' listeners, which only wrap the
    // socket: nothing has been read from it yet.
    const trusted = new Set(spec.protocol === 'ws' ? (spec.trustedProxies ?? []).map(plainAddress) : []);
    server.on('connection', (socket: Socket) => {
      listener.#open += 1;
      socket.once('close', () => (listener.#open -= 1));
      const address = plainAddress(socket.remoteAddress ?? '');
      // A trusted proxy's sockets are counted under the client it names, once the upgrade tells it.
      if (!events.gate.accept(socket, address, spec.protocol, !trusted.has(address))) return;
      if (spec.protocol === 'mqtt') events.onConnection({ stream: socket, address, connectArrived: () => events.gate.connected(socket) });
    });
    if (spec.maxConnections !== undefined) {
      // net.Server drops sockets beyond maxConnections before 'connection' and says so with 'drop'.
      server.maxConnections = spec.maxConnections;
      server.on('drop', (data) => events.onRefuse('listener_full', data?.remoteAddress ?? ''));
    }
    try {
      server.listen(spec.port, spec.host);
      await once(server, 'listening');
    } catch (error) {
      wss?.close();
      const component = COMPONENT[spec.protocol];
      if ((error as NodeJS.ErrnoException).code === 'EADDRINUSE') {
        throw new FerryError('PORT_IN_USE', `${LABEL[spec.protocol]} port ${spec.port} on ${spec.host} is already in use`, { component, cause: error });
      }
      throw wrapError('LISTEN_FAILED', `${LABEL[spec.protocol]} listener cannot listen on ${spec.host}:${spec.port}`, error, { component });
    }
    return listener;
  }

  /** Most open sockets at once; undefined for no limit. */
  get maxConnections(): number | undefined {
    const max = this.#server.maxConnections;
    return Number.isFinite(max) ? max : undefined;
  }

  get port(): number {
    const address = this.#server.address();
    return typeof address === 'object' && address !== null ? address.port : this.#requestedPort;
  }

  /** Open sockets, including those that have not sent CONNECT yet. */
  get connections(): number {
    return this.#open;
  }

  /** Stops accepting connections; open ones stay until the broker closes them. */
  close(): void {
    this.#wss?.close();
    this.#server.close();
  }
}

/** The listeners of a broker: TCP, then TLS and WebSocket when configured. */
export function listenerSpecs(
  options: ListenerOptions & { readonly tls?: ListenerOptions & TlsSettings; readonly websocket?: WebSocketListenerOptions },
  maxPacketBytes: number,
): ListenerSpec[] {
  const { host, port, maxConnections, tls, websocket } = options;
  const specs: ListenerSpec[] = [{ protocol: 'mqtt', host, port, ...(maxConnections === undefined ? {} : { maxConnections }) }];
  if (tls !== undefined) specs.push({ ...tls, protocol: 'mqtts', tls });
  if (websocket !== undefined) specs.push({ ...websocket, protocol: 'ws', maxPayloadBytes: maxPacketBytes });
  return specs;
}

/** Opens the listeners in order; when one fails, closes those already open and throws its error. */
export async function openListeners(specs: readonly ListenerSpec[], events: (protocol: ListenerProtocol) => ListenerEvents): Promise<Listener[]> {
  const open: Listener[] = [];
  try {
    for (const spec of specs) open.push(await Listener.open(spec, events(spec.protocol)));
  } catch (error) {
    for (const listener of open) listener.close();
    throw error;
  }
  return open;
}

async function createListenerServer(spec: ListenerSpec, events: ListenerEvents): Promise<{ server: Server; wss?: WebSocketServer }> {
  switch (spec.protocol) {
    case 'mqtt':
      // Connections are handed on by Listener.open, after the socket gate admitted them.
      return { server: createTcpServer() };
    case 'mqtts':
      return { server: createTls(spec.tls, events) };
    case 'ws':
      return createWebSocket(spec.path, spec.maxPayloadBytes, spec.trustedProxies ?? [], events);
  }
}

function createTls(settings: TlsSettings, events: ListenerEvents): Server {
  const requestCert = settings.requireClientCert || settings.identityFromCert;
  // node:http and node:tls are taken when a listener needs them, as CommonJS modules: an ES
  // import of node:http builds its ES facade by reading every export, which loads undici, and
  // took ~50 ms of every start (docs/benchmarks.md, startup).
  const server = process.getBuiltinModule('node:tls').createServer({
    cert: settings.cert,
    key: settings.key,
    ...(settings.ca === undefined ? {} : { ca: settings.ca }),
    requestCert,
    // Without requireClientCert a client may come without a certificate; one with an
    // invalid certificate is refused below instead of at the handshake.
    rejectUnauthorized: settings.requireClientCert,
  });
  // The TLS socket wraps the accepted one, which the socket gate holds: found again by peer.
  const accepted = new Map<string, Socket>();
  const peer = (s: Socket) => `${s.remoteAddress}|${s.remotePort}`;
  server.on('connection', (socket: Socket) => {
    const key = peer(socket);
    accepted.set(key, socket);
    socket.once('close', () => accepted.get(key) === socket && accepted.delete(key));
  });
  // 'secureConnection' comes from the handshake-done callback, before any application data is pushed.
  server.on('secureConnection', (socket: TLSSocket) => {
    const address = plainAddress(socket.remoteAddress ?? '');
    const raw = accepted.get(peer(socket));
    const connectArrived = () => raw !== undefined && events.gate.connected(raw);
    let certName: string | undefined;
    if (requestCert) {
      const peer = socket.getPeerCertificate();
      const presented = peer !== null && Object.keys(peer).length > 0;
      if (presented && !socket.authorized) {
        events.onRefuse('bad_certificate', address);
        socket.destroy();
        return;
      }
      const cn = presented && settings.identityFromCert ? peer.subject?.CN : undefined;
      certName = Array.isArray(cn) ? undefined : cn;
    }
    events.onConnection({ stream: socket, address, connectArrived, ...(certName === undefined ? {} : { certName }) });
  });
  // Failed handshakes (no or untrusted certificate, plain MQTT on the TLS port) just close the socket.
  server.on('tlsClientError', (_error, socket) => socket.destroy());
  settings.onServer?.(server);
  return server;
}

/** ws is loaded only when a WebSocket listener is configured: it costs a quarter second of startup. */
async function createWebSocket(
  path: string,
  maxPayloadBytes: number,
  trustedProxies: readonly string[],
  events: ListenerEvents,
): Promise<{ server: Server; wss: WebSocketServer }> {
  const { WebSocketServer, createWebSocketStream } = await import('ws');
  const server = process.getBuiltinModule('node:http').createServer((_request, response) => {
    response.writeHead(426, { 'content-type': 'text/plain', upgrade: 'websocket' }).end(`MQTT over WebSocket: connect to ${path}\n`);
  });
  // maxPayload bounds what ws buffers for one frame before the packet guard sees it.
  const wss = new WebSocketServer({ server, path, maxPayload: maxPayloadBytes });
  wss.on('connection', (ws, request) => {
    // Errors reach aedes through the stream; this only keeps the socket's own from being unhandled.
    ws.on('error', () => {});
    const socket = request.socket as Socket;
    const address = clientAddress(request, trustedProxies);
    const peer = plainAddress(socket.remoteAddress ?? '');
    if (trustedProxies.map(plainAddress).includes(peer) && !events.gate.count(socket, address, 'ws')) return;
    const stream = createWebSocketStream(ws);
    events.onConnection({ stream, address, request, connectArrived: () => events.gate.connected(socket) });
  });
  wss.on('error', () => {});
  return { server, wss };
}
