import { once } from 'node:events';
import { type Socket, connect } from 'node:net';
import mqttPacket, { type Packet } from 'mqtt-packet';
import { eventually } from './eventually.ts';

/**
 * An MQTT 5 client on a raw socket (mqtt-packet encodes and decodes): it sends exactly the
 * packets a test gives and acknowledges nothing by itself, so a test can hold PUBACKs back
 * or send what a client library would refuse to (an unknown topic alias, say).
 */
export class RawMqtt5 {
  readonly packets: Packet[] = [];
  #socket: Socket;
  closed = false;

  private constructor(socket: Socket) {
    this.#socket = socket;
    const parser = mqttPacket.parser({ protocolVersion: 5 });
    parser.on('packet', (p: Packet) => this.packets.push(p));
    socket.on('data', (chunk: Buffer) => parser.parse(chunk));
    socket.on('close', () => (this.closed = true));
    socket.on('error', () => {});
  }

  /** Connects and sends CONNECT; resolves with the CONNACK. */
  static async connect(url: string, connectPacket: Partial<mqttPacket.IConnectPacket> & { clientId: string }): Promise<{ raw: RawMqtt5; connack: mqttPacket.IConnackPacket }> {
    const { hostname, port } = new URL(url);
    const socket = connect(Number(port), hostname);
    await once(socket, 'connect');
    const raw = new RawMqtt5(socket);
    raw.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 60, ...connectPacket });
    const connack = await raw.next('connack');
    return { raw, connack: connack as mqttPacket.IConnackPacket };
  }

  send(packet: Packet): void {
    this.#socket.write(mqttPacket.generate(packet, { protocolVersion: 5 }));
  }

  /** Writes bytes as they are (a packet no encoder would make). */
  sendBytes(bytes: Buffer): void {
    this.#socket.write(bytes);
  }

  /**
   * Sends `packet` with the bytes of `marker` in it replaced by `bytes` (as many): what an
   * encoder of JavaScript strings cannot write, such as ill-formed UTF-8.
   */
  sendWith(packet: Packet, marker: string, bytes: Buffer): void {
    const encoded = mqttPacket.generate(packet, { protocolVersion: 5 });
    const at = encoded.indexOf(marker);
    if (at < 0 || bytes.length !== Buffer.byteLength(marker)) throw new Error(`sendWith: ${marker} is not in the packet, or not ${bytes.length} bytes`);
    bytes.copy(encoded, at);
    this.#socket.write(encoded);
  }

  /** Waits for the first packet of this kind not taken yet, and takes it. */
  async next(cmd: Packet['cmd']): Promise<Packet> {
    return eventually(() => {
      const i = this.packets.findIndex((p) => p.cmd === cmd);
      if (i < 0) throw new Error(`no ${cmd} came; got ${this.packets.map((p) => p.cmd).join(', ') || 'nothing'}`);
      return this.packets.splice(i, 1)[0] as Packet;
    });
  }

  /** PUBLISH packets received and not taken, in order. */
  get publishes(): mqttPacket.IPublishPacket[] {
    return this.packets.filter((p): p is mqttPacket.IPublishPacket => p.cmd === 'publish');
  }

  end(): void {
    this.#socket.destroy();
  }
}
