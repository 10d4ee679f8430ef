import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import pino from 'pino';
import { map } from 'rxjs';
import { loadConfig } from '../../src/config/load.ts';
import { Gateway } from '../../src/runtime/gateway.ts';
import { componentKinds } from '../../src/runtime/registry.ts';
import { handlerBridge } from '../harness/handler-gateway.ts';

// A source that gives up once started (its TLS file removed after the config was checked)
// leaves its bridge `failed` with the reason, counted; the gateway and its other bridges go on.

test('a YAML or TypeScript bridge whose source fails reports it, counted, and the gateway runs on', { timeout: 30_000 }, async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'ferry-source-failed-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  mkdirSync(join(root, 'bridges'));
  writeFileSync(join(root, 'bridges', 'ca.pem'), '-----BEGIN CERTIFICATE-----\n(checked at load, gone at the start)\n-----END CERTIFICATE-----\n');
  const from = (topic: string) => `{mqttClient: {url: 'mqtts://127.0.0.1:1', clientId: ferry-${topic}, topics: ['${topic}/#'], tls: {ca: ca.pem}}}`;
  writeFileSync(join(root, 'bridges', 'y.yaml'), `name: y\nfrom: ${from('y')}\nto: [{history: {}}]\n`);
  writeFileSync(
    join(root, 'gateway.yaml'),
    'mqtt: {host: 127.0.0.1, port: 0, allowAnonymous: loopback}\nadmin: {enabled: false}\ndevices: []\nbridges: [bridges]\ngateway: {dataDir: data}\n',
  );
  const config = loadConfig(join(root, 'gateway.yaml'), { kinds: componentKinds, env: {} });
  const typed = handlerBridge((messages, tools) => messages.pipe(map((m) => tools.to('out', m))), {
    from: { mqttClient: { url: 'mqtts://127.0.0.1:1', clientId: 'ferry-h', topics: ['h/#'], tls: { ca: join(root, 'bridges', 'ca.pem') } } },
  });
  rmSync(join(root, 'bridges', 'ca.pem'));

  const gateway = new Gateway({ ...config, bridgeConfigs: [...config.bridgeConfigs, typed] }, pino({ level: 'silent' }), 'test');
  t.after(() => gateway.stop());
  await gateway.start();
  const deadline = Date.now() + 10_000;
  const failed = () => gateway.status().bridges.filter((bridge) => bridge.state === 'failed');
  while (failed().length < 2 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));

  for (const name of ['y', 'h']) {
    const status = gateway.status().bridges.find((bridge) => bridge.name === name);
    assert.equal(status?.state, 'failed', name);
    assert.match(String(status?.sourceError), /cannot read the TLS ca file/, name);
    assert.equal(gateway.counters.get(`bridge.source.failed{bridge=${name}}`), 1, name);
    assert.ok(
      gateway.health().degraded.some((problem) => problem.bridge === name && problem.problem === 'source_failed'),
      name,
    );
  }
});
