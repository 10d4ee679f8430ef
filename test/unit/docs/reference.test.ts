import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { referencePages } from '../../../scripts/docs/pages.ts';

const REFERENCE = fileURLToPath(new URL('../../../docs/reference/', import.meta.url));

test('docs/reference/ is the one made from the code (run `npm run docs` after changing a schema, a metric or a command)', () => {
  const pages = referencePages();
  const stale = [...pages].filter(([path, text]) => readOr(join(REFERENCE, path)) !== text).map(([path]) => path);
  assert.deepEqual(stale, [], 'out of date');
  const files = readdirSync(REFERENCE, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.md'));
  assert.deepEqual(
    files.filter((f) => !pages.has(f)),
    [],
    'pages nothing makes any more',
  );
});

test('there is a page for every source, sink and transform step, the metrics and the CLI', () => {
  const pages = referencePages();
  for (const path of [
    'sources/mqtt.md',
    'sources/mqttClient.md',
    'sources/kafka.md',
    'sinks/history.md',
    'sinks/kafka.md',
    'sinks/mqttClient.md',
    'sinks/devices.md',
    'transforms/validate.md',
    'gateway.md',
    'bridge.md',
    'device.md',
    'metrics.md',
    'cli.md',
  ]) {
    assert.ok(pages.has(path), path);
  }
  const cli = pages.get('cli.md') as string;
  for (const command of ['ferry run', 'ferry buffer peek', 'ferry config schema', 'ferry device hash-password', 'ferry simulate'])
    assert.match(cli, new RegExp(`^## ${command}$`, 'm'));
  assert.match(cli, /\| `--kind <kind>` \| Which file\. One of: `gateway`, `bridge`, `device`\. \| `gateway` \|/);
  assert.match(cli, /ferry run --config config\/gateway\.yaml --mqtt-port 11883/);
  assert.match(
    pages.get('metrics.md') as string,
    /\| `ferry_mqtt_connections_refused_total`<br>`mqtt\.connections\.refused` \| counter \| connections \| `reason`, .*`session_of_another_login`/,
  );
});

function readOr(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}
