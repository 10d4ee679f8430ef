import { spawn } from 'node:child_process';

export interface PubResult {
  readonly code: number | null;
  readonly stderr: string;
}

/**
 * Publishes one message with Mosquitto's own `mosquitto_pub` (a real, independent client).
 * With QoS 1 it exits 0 only after it got the PUBACK.
 */
export async function mosquittoPub(
  brokerUrl: string,
  topic: string,
  message: string,
  options: {
    qos?: 0 | 1 | 2;
    clientId?: string;
    protocol?: 'mqttv311' | 'mqttv5';
    /** Connect over TLS, trusting this CA file. */
    cafile?: string;
    /** Retained; an empty message then clears the topic's retained message. */
    retain?: boolean;
    /** MQTT 5 user properties of the PUBLISH (with protocol mqttv5). */
    userProperties?: Readonly<Record<string, string>>;
    /** More mosquitto_pub arguments, such as `-D publish topic-alias 1 --repeat 3`. */
    extraArgs?: readonly string[];
  } = {},
): Promise<PubResult> {
  const url = new URL(brokerUrl);
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1') || '127.0.0.1';
  const args = ['-h', host, '-p', url.port || '1883', '-q', String(options.qos ?? 1), '-t', topic, ...(message === '' ? ['-n'] : ['-m', message])];
  if (options.retain === true) args.push('-r');
  if (options.clientId !== undefined) args.push('-i', options.clientId);
  if (options.protocol !== undefined) args.push('-V', options.protocol);
  if (options.cafile !== undefined) args.push('--cafile', options.cafile);
  for (const [name, value] of Object.entries(options.userProperties ?? {})) args.push('-D', 'publish', 'user-property', name, value);
  args.push(...(options.extraArgs ?? []));
  if (url.username) args.push('-u', decodeURIComponent(url.username));
  if (url.password) args.push('-P', decodeURIComponent(url.password));
  const child = spawn('mosquitto_pub', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', (err: NodeJS.ErrnoException) =>
      reject(err.code === 'ENOENT' ? new Error('mosquitto_pub is not on PATH: install it with `apt-get install -y mosquitto-clients`') : err),
    );
    child.once('close', resolve);
  });
  return { code, stderr: stderr.trim() };
}

/**
 * Subscribes with Mosquitto's own `mosquitto_sub` and resolves with the first `count`
 * messages as "topic payload" lines (-v), or with what arrived when `timeoutS` ran out.
 * `ready` resolves once the subscription is in place (mosquitto_sub has no signal for it,
 * so it is a short wait after the process started).
 */
export function mosquittoSub(
  brokerUrl: string,
  filters: readonly string[],
  count: number,
  options: {
    timeoutS?: number;
    qos?: 0 | 1 | 2;
    protocol?: 'mqttv311' | 'mqttv5';
    clientId?: string;
    cleanSession?: boolean;
    /** More mosquitto_sub arguments, such as `-D connect maximum-packet-size 200`. */
    extraArgs?: readonly string[];
    /** `ready` resolves when the SUBACK came (mosquitto_sub -d prints it) instead of after a pause. */
    readyOnSuback?: boolean;
  } = {},
): { ready: Promise<void>; messages: Promise<string[]> } {
  const url = new URL(brokerUrl);
  const args = ['-h', url.hostname || '127.0.0.1', '-p', url.port || '1883', '-v', '-C', String(count), '-W', String(options.timeoutS ?? 5), '-q', String(options.qos ?? 1)];
  for (const filter of filters) args.push('-t', filter);
  if (options.protocol !== undefined) args.push('-V', options.protocol);
  if (options.clientId !== undefined) args.push('-i', options.clientId);
  if (options.cleanSession === false) args.push('-c');
  args.push(...(options.extraArgs ?? []));
  if (options.readyOnSuback === true) args.push('-d');
  // mosquitto_sub's stdout is a pipe here, which C buffers whole: line buffering (coreutils'
  // stdbuf) lets the SUBACK line out when it is printed.
  const child =
    options.readyOnSuback === true
      ? spawn('stdbuf', ['-oL', 'mosquitto_sub', ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn('mosquitto_sub', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let subacked: () => void = () => {};
  const suback = new Promise<void>((resolve) => (subacked = resolve));
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
    if (stdout.includes(' received SUBACK')) subacked();
  });
  const messages = new Promise<string[]>((resolve, reject) => {
    child.once('error', (err: NodeJS.ErrnoException) =>
      reject(err.code === 'ENOENT' ? new Error('mosquitto_sub is not on PATH: install it with `apt-get install -y mosquitto-clients`') : err),
    );
    child.once('close', () => {
      subacked();
      // -d adds its own lines ("Client <id> received PUBLISH ...") around the messages
      const lines = stdout.split('\n').filter((line) => line !== '');
      resolve(options.readyOnSuback === true ? lines.filter((line) => !/^(Client \S+ (sending|received) |Subscribed \(mid)/.test(line)) : lines);
    });
  });
  return { ready: options.readyOnSuback === true ? suback : new Promise((resolve) => setTimeout(resolve, 300)), messages };
}
