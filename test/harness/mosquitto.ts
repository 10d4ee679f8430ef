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
  options: { qos?: 0 | 1 | 2; clientId?: string; protocol?: 'mqttv311' | 'mqttv5'; /** Connect over TLS, trusting this CA file. */ cafile?: string } = {},
): Promise<PubResult> {
  const url = new URL(brokerUrl);
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1') || '127.0.0.1';
  const args = ['-h', host, '-p', url.port || '1883', '-q', String(options.qos ?? 1), '-t', topic, '-m', message];
  if (options.clientId !== undefined) args.push('-i', options.clientId);
  if (options.protocol !== undefined) args.push('-V', options.protocol);
  if (options.cafile !== undefined) args.push('--cafile', options.cafile);
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
