import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { hashPassword } from '../../src/mqtt/password.ts';

/** A bridge keeping device telemetry in the local history. */
export const HISTORY_BRIDGE = 'name: history\nfrom: {mqtt: {topics: ["devices/+/telemetry/#"]}}\nto: [{history: {}}]\n';

/** Writes a gateway config tree: gateway.yaml with `mqtt`, the history bridge, and `devices/*.yaml`. */
export function writeGatewayTree(root: string, mqtt: string, devices: Record<string, string>): string {
  const files: Record<string, string> = {
    'gateway.yaml': `mqtt: ${mqtt}\nbridges: [bridges]\ndevices: [devices]\n`,
    'bridges/history.yaml': HISTORY_BRIDGE,
    ...Object.fromEntries(Object.entries(devices).map(([name, text]) => [`devices/${name}`, text])),
  };
  mkdirSync(join(root, 'devices'), { recursive: true });
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  return join(root, 'gateway.yaml');
}

/** One `credentials` entry of a device profile, with the password hashed. */
export async function credential(username: string, password: string, extra = ''): Promise<string> {
  return `  - {username: ${username}, passwordHash: "${await hashPassword(password)}"${extra}}\n`;
}
