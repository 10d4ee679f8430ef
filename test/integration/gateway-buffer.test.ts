import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { connectAsync } from 'mqtt';
import pino from 'pino';
import { loadConfig } from '../../src/config/load.ts';
import { Gateway } from '../../src/runtime/gateway.ts';
import { componentKinds } from '../../src/runtime/registry.ts';
import { blackHole } from '../harness/black-hole.ts';
import { tempDirs } from '../harness/temp.ts';
import { eventually } from '../harness/eventually.ts';

const tempDir = tempDirs('ferry-gateway-buffer-');

/** A gateway in this process, on free ports, with the given bridge files. */
async function gatewayWith(bridges: Record<string, string>): Promise<Gateway> {
  const root = tempDir();
  mkdirSync(join(root, 'bridges'));
  writeFileSync(
    join(root, 'gateway.yaml'),
    'mqtt: {host: 127.0.0.1, port: 0, allowAnonymous: loopback}\nadmin: {enabled: false}\nshutdown: {drainTimeoutMs: 500}\ndevices: []\nbridges: [bridges]\ngateway: {dataDir: data}\n',
  );
  for (const [name, text] of Object.entries(bridges)) writeFileSync(join(root, 'bridges', name), text);
  const gateway = new Gateway(loadConfig(join(root, 'gateway.yaml'), { kinds: componentKinds, env: {} }), pino({ level: 'silent' }), 'test');
  await gateway.start();
  return gateway;
}

async function publish(gateway: Gateway, topic: string, count: number): Promise<void> {
  const client = await connectAsync(`mqtt://127.0.0.1:${gateway.mqttPort}`, { clientId: `dev-${topic.replace(/\W/g, '')}`, reconnectPeriod: 0 });
  try {
    for (let i = 0; i < count; i++) await client.publishAsync(topic, JSON.stringify({ i }), { qos: 1 });
  } finally {
    await client.endAsync();
  }
}

const bridgeTo = (name: string, filter: string, sink: string, buffer: string) => `name: ${name}\nfrom: {mqtt: {topics: ["${filter}"]}}\nto:\n  - ${sink}\nbuffer: ${buffer}\n`;

test('through the running gateway: TTL expiry and drop-newest are applied and counted exactly', async () => {
  const hole = await blackHole();
  const gateway = await gatewayWith({
    'expiring.yaml': bridgeTo('expiring', 'a/#', `kafka: {brokers: "${hole.address}", topic: t, retries: 0}`, '{maxAgeMs: 200}'),
    'small.yaml': bridgeTo('small', 'b/#', `kafka: {brokers: "${hole.address}", topic: t, retries: 0}`, '{maxMessages: 3, overflow: drop-newest}'),
  });
  try {
    await publish(gateway, 'a/x', 5);
    await publish(gateway, 'b/x', 5);
    await eventually(() => assert.ok(!(gateway.counters.get('buffer.expired{bridge=expiring}') < 5), 'still: gateway.counters.get(buffer.expired{bridge=expiring}) < 5'), {
      timeoutMs: 5000,
    });
    const status = gateway.status();
    assert.equal(gateway.counters.get('buffer.expired{bridge=expiring}'), 5);
    assert.equal(status.buffer.bridges.find((b) => b.bridge === 'expiring')?.messages, 0);
    assert.equal(gateway.counters.get('buffer.dropped{bridge=small,reason=drop-newest}'), 2);
    assert.equal(status.buffer.bridges.find((b) => b.bridge === 'small')?.messages, 3);
    assert.equal(gateway.counters.get('mqtt.messages.received{qos=1}'), 10);
  } finally {
    await gateway.stop();
    hole.close();
  }
});

test('a backlog is read once the broker accepts connections, not before: its sink does not delay the start', async () => {
  const hole = await blackHole();
  const bridge = bridgeTo('behind', 'a/#', `kafka: {brokers: "${hole.address}", topic: t, retries: 0}`, '{replay: live-first, windowSize: 5}');
  const first = await gatewayWith({ 'behind.yaml': bridge });
  const root = join(first.config.dataDirPath, '..');
  try {
    await publish(first, 'a/x', 20);
  } finally {
    await first.stop();
  }
  // What the log says, in order: the start line, and the reader's first read of the backlog
  // (a sink more than a window behind is switched to live-first there).
  const lines: string[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => lines.push(String(JSON.parse(line).msg)) });
  const second = new Gateway(loadConfig(join(root, 'gateway.yaml'), { kinds: componentKinds, env: {} }), logger, 'test');
  await second.start();
  try {
    const behind = 'sink is behind: new messages first, backlog behind them';
    await eventually(() => assert.ok(lines.includes(behind), 'the backlog was not read'), { timeoutMs: 5000 });
    const ready = lines.findIndex((line) => line.startsWith('accepting MQTT connections'));
    assert.ok(ready >= 0 && ready < lines.indexOf(behind), `read before the start line: ${lines.join(' | ')}`);
  } finally {
    await second.stop();
    hole.close();
  }
});
