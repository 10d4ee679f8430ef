// Reload warnings name a changed OTLP header, never its value (an API key).
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { loadConfig } from '../../../src/config/load.ts';
import { restartNeeded } from '../../../src/runtime/reload-plan.ts';
import { componentKinds } from '../../../src/runtime/registry.ts';

const root = mkdtempSync(join(tmpdir(), 'ferry-ops-reload-'));
after(() => rmSync(root, { recursive: true, force: true }));
mkdirSync(join(root, 'config'));
const file = join(root, 'config/gateway.yaml');
writeFileSync(file, 'telemetry:\n  endpoint: http://o1:4318\n  headers:\n    authorization: ${OTLP_TOKEN}\nbridges: []\ndevices: []\n');
const load = (env: Record<string, string>) => loadConfig(file, { kinds: componentKinds, env, cwd: root });

test('reload warnings: telemetry.headers is named without its values, the derived export settings without their internals', () => {
  const rotated = restartNeeded(load({ OTLP_TOKEN: 'Bearer old-secret-abc123' }), load({ OTLP_TOKEN: 'Bearer new-secret-xyz789' }));
  assert.deepEqual(rotated, ['telemetry.headers changed: not applied; restart needed']);

  const fromEnv = restartNeeded(
    load({ OTLP_TOKEN: 'Bearer s', OTEL_EXPORTER_OTLP_HEADERS: 'x-api-key=envsecret1' }),
    load({ OTLP_TOKEN: 'Bearer s', OTEL_EXPORTER_OTLP_HEADERS: 'x-api-key=envsecret2' }),
  );
  assert.deepEqual(fromEnv, ['telemetry export settings changed: not applied; restart needed']);
  assert.doesNotMatch([...rotated, ...fromEnv].join('\n'), /secret/);
});
