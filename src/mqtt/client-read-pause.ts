/** The part of an mqtt.js client whose keepalive a ReadPause holds (public methods of MqttClient, mqtt.js 5). */
export interface KeepaliveClient {
  /** Called by mqtt.js' KeepaliveManager when no PINGRESP came 1.5 keepalives after the last reschedule: it ends the connection. */
  onKeepaliveTimeout(): void;
  sendPing(): void;
  /** Restarts the keepalive timer: the next PINGREQ one keepalive from now, the timeout half a keepalive after it. */
  reschedulePing(force?: boolean): void;
  /** The connection's stream: a TCP or TLS socket (a WebSocket stream has no `bytesRead`). */
  readonly stream?: unknown;
}

/** What a pause reads of its socket to tell whether the broker still sends anything. */
interface CountedSocket {
  readonly bytesRead: number;
  readonly readableLength: number;
  readonly readableHighWaterMark: number;
}

/**
 * The mqttClient source's pauses of mqtt.js' reading: the window of unstored QoS 1 messages is
 * full (MQTT 3.1.1, whose broker-side window Ferry does not know, or a broker past Receive
 * Maximum), or a QoS 2 message waits for its commit before its PUBREC. mqtt.js reads the socket
 * only between packets it has finished handling, so a pause also leaves the broker's PINGRESPs
 * unread, and mqtt.js would take the connection for dead 1.5 keepalives later: the source
 * reconnected every 1.5 keepalives while its buffer stayed full, and the broker delivered what
 * it held again each time.
 *
 * While a pause lasts, a keepalive timeout sends another PINGREQ instead of ending the
 * connection: the broker keeps seeing the client (at least one PINGREQ per keepalive), and a
 * broker that has gone away is still noticed, as the write of a PINGREQ to its closed socket
 * fails. When the last pause ends the keepalive timer restarts, so a PINGRESP that waited in the
 * socket is read before the next timeout. Nothing is read or held in memory beyond what a pause
 * already held (the socket's buffers); acknowledgements are untouched.
 *
 * A broker whose host vanished without closing (a pulled cable, a NAT that forgot the
 * connection) fails no write: the PINGREQs sit in the kernel's send queue until TCP's
 * retransmission timeout, 15 minutes and more on Linux, and TCP keepalive probes are not sent
 * while data awaits its ACK. So a pause also watches the socket's byte count: the socket still
 * reads from the kernel into its buffer, unparsed, until that buffer is full. From the second
 * keepalive timeout of a pause on, a timeout after a whole period of 1.5 keepalives in which two
 * PINGREQs went out, nothing came in and the buffer had room for it ends the connection, as
 * mqtt.js would have: within 3 keepalives of the broker going silent (or of the pause's start).
 * With the buffer full (a backlog larger than it) nothing can show the broker alive, and a pause
 * waits as before.
 */
export class ReadPause {
  readonly #client: KeepaliveClient;
  /** Pauses of the current connection that have not ended. */
  #holds = 0;
  /** Bumped when a connection closes: the ends of its pauses no longer count. */
  #connection = 0;
  /** The socket's bytes read at the last keepalive timeout of the current pause; undefined before its first. */
  #readAtTimeout: number | undefined;

  constructor(client: KeepaliveClient) {
    this.#client = client;
    const timedOut = client.onKeepaliveTimeout.bind(client);
    client.onKeepaliveTimeout = () => {
      if (this.#holds === 0 || this.#silent()) {
        timedOut();
        return;
      }
      client.sendPing();
      client.reschedulePing(true);
    };
  }

  /** Whether reading is paused on the current connection. */
  get paused(): boolean {
    return this.#holds > 0;
  }

  /**
   * Pauses reading until the returned function is called; that function ends the pause (once)
   * and calls `read`, mqtt.js' read of the next packet.
   */
  hold(read: () => void): () => void {
    const connection = this.#connection;
    this.#holds += 1;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      if (connection === this.#connection) {
        this.#holds -= 1;
        if (this.#holds === 0) {
          this.#readAtTimeout = undefined;
          this.#client.reschedulePing(true);
        }
      }
      read();
    };
  }

  /** The connection closed: its pauses are over. */
  closed(): void {
    this.#connection += 1;
    this.#holds = 0;
    this.#readAtTimeout = undefined;
  }

  /**
   * At a keepalive timeout of a pause: whether the broker sent nothing since the previous one
   * although the socket could have read it. The first timeout of a pause only counts: bytes that
   * came before the pause (a PINGRESP behind the packet it holds) say nothing of its period.
   */
  #silent(): boolean {
    const socket = this.#client.stream as Partial<CountedSocket> | undefined;
    const read = socket?.bytesRead;
    const before = this.#readAtTimeout;
    this.#readAtTimeout = typeof read === 'number' ? read : undefined;
    if (typeof read !== 'number' || before === undefined || read !== before) return false;
    // A full buffer stops the socket's reads from the kernel: a silent broker or a waiting one.
    return (socket?.readableLength ?? 0) < (socket?.readableHighWaterMark ?? 0);
  }
}
