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

/**
 * The source of a TypeScript bridge `notes`: each message of `notes/#` becomes a row (its id and
 * topic) of table `notes` in the gateway's database `main`, written through tools.database with no
 * sink (it acks with done() after the commit). `ignoreDuplicates`: a message whose id is there
 * already is acked without a second row, where otherwise the insert fails.
 */
export function notesBridge(options: { ignoreDuplicates?: boolean } = {}): string {
  const onConflict = options.ignoreDuplicates === true ? ".onConflict((oc) => oc.column('id').doNothing())" : '';
  return `import { concatMap, ignoreElements } from 'rxjs';
import { defineBridge } from 'ferry';

interface Tables { notes: { id: string; topic: string } }

export default defineBridge({
  name: 'notes',
  from: { mqtt: { topics: ['notes/#'] } },
  to: {},
  handle: (messages, tools) =>
    messages.pipe(
      concatMap(async (m) => {
        await tools.database<Tables>('main').insertInto('notes').values({ id: m.id, topic: m.topic })${onConflict}.execute();
        m.done();
      }),
      ignoreElements(),
    ),
});
`;
}

/** One `credentials` entry of a device profile, with the password hashed. */
export async function credential(username: string, password: string, extra = ''): Promise<string> {
  return `  - {username: ${username}, passwordHash: "${await hashPassword(password)}"${extra}}\n`;
}
