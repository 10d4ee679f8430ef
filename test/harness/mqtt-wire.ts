// Hand-built MQTT 3.1.1 packets for tests that speak to a broker over a raw socket,
// including packets no client library would send.

/** The variable-length "remaining length" encoding: 7 bits a byte, low group first. */
export function remainingLength(length: number): Buffer {
  const bytes: number[] = [];
  do {
    let byte = length % 128;
    length = Math.floor(length / 128);
    if (length > 0) byte |= 0x80;
    bytes.push(byte);
  } while (length > 0);
  return Buffer.from(bytes);
}

/** A whole packet: the first byte (type and flags), the remaining length, the body. */
export function packet(first: number, body: Uint8Array = Buffer.alloc(0)): Buffer {
  return Buffer.concat([Buffer.from([first]), remainingLength(body.length), body]);
}

/** A length-prefixed string: `text` encoded as UTF-8, or bytes as given (ill-formed UTF-8 included). */
function utf8(text: string | Uint8Array): Buffer {
  const bytes = typeof text === 'string' ? Buffer.from(text) : Buffer.from(text);
  return Buffer.concat([Buffer.from([bytes.length >> 8, bytes.length & 0xff]), bytes]);
}

export function connectPacket(clientId: string, keepaliveSeconds = 60, clean = true, login?: { username: string; password: string }): Buffer {
  const flags = (clean ? 0x02 : 0x00) | (login === undefined ? 0 : 0xc0); // clean session or not; username and password
  const header = Buffer.from([0x04, flags, keepaliveSeconds >> 8, keepaliveSeconds & 0xff]); // level 4
  const credentials = login === undefined ? [] : [utf8(login.username), utf8(login.password)];
  return packet(0x10, Buffer.concat([utf8('MQTT'), header, utf8(clientId), ...credentials]));
}

/** An MQTT 5 CONNECT (clean start) whose properties section is `properties` as given, length included. */
export function connectPacketV5(clientId: string, properties: Uint8Array = Buffer.from([0]), keepaliveSeconds = 60): Buffer {
  const header = Buffer.from([0x05, 0x02, keepaliveSeconds >> 8, keepaliveSeconds & 0xff]); // level 5, clean start
  return packet(0x10, Buffer.concat([utf8('MQTT'), header, properties, utf8(clientId)]));
}

/** An MQTT 5 PUBLISH whose properties section is `properties` as given, length included. */
export function publishPacketV5(topic: string, payload: Uint8Array, properties: Uint8Array, options: { qos?: 0 | 1 | 2; id?: number } = {}): Buffer {
  const id = options.id === undefined ? Buffer.alloc(0) : Buffer.from([options.id >> 8, options.id & 0xff]);
  return packet(0x30 | ((options.qos ?? 0) << 1), Buffer.concat([utf8(topic), id, properties, payload]));
}

/**
 * A PUBLISH; `id` is the packet identifier, written only when given; `dup` sets the DUP flag
 * (a resend). A topic given as bytes is written as it is.
 */
export function publishPacket(topic: string | Uint8Array, payload: Uint8Array, options: { qos?: 0 | 1 | 2; id?: number; dup?: boolean } = {}): Buffer {
  const id = options.id === undefined ? Buffer.alloc(0) : Buffer.from([options.id >> 8, options.id & 0xff]);
  return packet(0x30 | (options.dup === true ? 0x08 : 0) | ((options.qos ?? 0) << 1), Buffer.concat([utf8(topic), id, payload]));
}

/** Size of the payload that makes a QoS 0 PUBLISH to `topic` exactly `total` bytes long. */
export function payloadForTotal(topic: string, total: number): number {
  const variable = 2 + Buffer.byteLength(topic);
  for (let payload = total - 1 - 1 - variable; payload > 0; payload -= 1) {
    if (1 + remainingLength(variable + payload).length + variable + payload === total) return payload;
  }
  throw new Error(`no QoS 0 PUBLISH to ${topic} is exactly ${total} bytes`);
}

/** A SUBSCRIBE of one filter at `qos`, packet identifier `id`. */
export function subscribePacket(filter: string, qos: 0 | 1 = 0, id = 1): Buffer {
  return packet(0x82, Buffer.concat([Buffer.from([id >> 8, id & 0xff]), utf8(filter), Buffer.from([qos])]));
}
