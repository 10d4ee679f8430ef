import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { after, before } from 'node:test';
import mqtt, { type IClientOptions, type IConnackPacket, type IPublishPacket, type MqttClient, type Packet } from 'mqtt';
import { type RunningFerry, startFerry } from './ferry-process.ts';
import { writeGatewayTree } from './gateway-tree.ts';
import { tempDirs } from './temp.ts';

/** `ferry run` with anonymous devices on loopback and the embedded broker's defaults, plus `mqtt` settings. */
export async function startAnonymousGateway(root: string, mqttSettings = ''): Promise<RunningFerry> {
  const settings = mqttSettings === '' ? '{allowAnonymous: true}' : `{allowAnonymous: true, ${mqttSettings}}`;
  return startFerry(['--config', writeGatewayTree(root, settings, {}), '--data-dir', join(root, 'data')]);
}

export interface Mqtt5Device {
  readonly client: MqttClient;
  readonly connack: IConnackPacket;
  /** PUBLISH packets received, in order, kept from before the CONNACK (queued messages follow it at once). */
  readonly publishes: IPublishPacket[];
  /** Every packet received, in order. */
  readonly packets: Packet[];
}

/** Connects an mqtt.js client speaking MQTT 5 (no reconnects) and logs what it receives. */
export async function connectMqtt5(url: string, clientId: string, options: IClientOptions = {}): Promise<Mqtt5Device> {
  const client = mqtt.connect(url, { clientId, protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 5000, ...options });
  const publishes: IPublishPacket[] = [];
  const packets: Packet[] = [];
  client.on('packetreceive', (packet) => {
    packets.push(packet);
    if (packet.cmd === 'publish') publishes.push(packet);
  });
  const connack = await new Promise<IConnackPacket>((resolve, reject) => {
    client.once('connect', resolve);
    client.once('error', reject);
    client.once('close', () => reject(new Error(`${clientId}: connection closed before CONNACK`)));
  });
  return { client, connack, publishes, packets };
}

/** The gateway's counters as /api/status reports them (`name{label=value}` keys). */
export async function gatewayCounters(gw: RunningFerry): Promise<Record<string, number>> {
  const status = (await (await fetch(`${gw.adminUrl}/api/status`)).json()) as { counters: Record<string, number> };
  return status.counters;
}

/**
 * One anonymous gateway for the tests of a file: started before them, stopped after them with
 * the clients pushed to `clients`.
 */
export function gatewayForFile(tempPrefix: string): {
  readonly gw: RunningFerry;
  readonly clients: MqttClient[];
  /** An MQTT 5 device connected to this file's gateway (a random client id when none is given), ended after the file. */
  device(clientId?: string, options?: IClientOptions): Promise<Mqtt5Device>;
} {
  const tempDir = tempDirs(tempPrefix);
  const clients: MqttClient[] = [];
  let gw: RunningFerry | undefined;
  before(async () => {
    gw = await startAnonymousGateway(tempDir());
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.endAsync(true)));
    gw?.child.kill('SIGTERM');
    await gw?.exited;
  });
  const file = {
    get gw(): RunningFerry {
      if (gw === undefined) throw new Error('the gateway of this file has not started');
      return gw;
    },
    clients,
    async device(clientId = `dev-${randomUUID().slice(0, 12)}`, options: IClientOptions = {}): Promise<Mqtt5Device> {
      const d = await connectMqtt5(file.gw.mqttUrl, clientId, options);
      clients.push(d.client);
      return d;
    },
  };
  return file;
}
