import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, test } from 'node:test';
import { ConfigError, formatIssue } from '../../../src/config/issues.ts';
import { loadConfig } from '../../../src/config/load.ts';
import { componentKinds } from '../../../src/runtime/registry.ts';

const roots: string[] = [];
after(() => roots.forEach((r) => rmSync(r, { recursive: true, force: true })));

/** Loads a gateway with one bridge file; returns the formatted problems (none when it loads). */
function load(bridge: string): string[] {
  const root = mkdtempSync(join(tmpdir(), 'ferry-kafka-config-'));
  roots.push(root);
  const files = { 'config/gateway.yaml': 'bridges: [../bridges]\ndevices: []\n', 'bridges/b.yaml': bridge };
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  try {
    loadConfig(join(root, 'config/gateway.yaml'), { kinds: componentKinds, env: {}, cwd: root });
    return [];
  } catch (error) {
    assert.ok(error instanceof ConfigError, String(error));
    return error.issues.map(formatIssue);
  }
}

const bridge = (kafka: string, topics = '[devices/+/telemetry/#]') => `name: b\nfrom:\n  mqtt:\n    topics: ${topics}\nto:\n  - kafka:\n      brokers: localhost:9092\n${kafka}`;

test('templates that the filters can fill load', () => {
  assert.deepEqual(load(bridge('      topic: iot.${1}.telemetry\n      key: ${1}\n      headers:\n        rest: ${#}\n        site: ${payload.site}\n')), []);
});

test('a capture the source filter does not have is an error at its line and column', () => {
  assert.deepEqual(load(bridge('      topic: iot.${2}.telemetry\n      headers:\n        rest: ${#}\n', '[devices/+/telemetry]')), [
    "bridges/b.yaml:8:14: to[0].kafka.topic: template 'iot.${2}.telemetry': ${2} needs a 2nd '+' wildcard, but the filter 'devices/+/telemetry' has 1 (from.mqtt)",
    "bridges/b.yaml:10:15: to[0].kafka.headers.rest: template '${#}': ${#} needs a filter ending in '#', but 'devices/+/telemetry' does not (from.mqtt)",
  ]);
});

test('every filter of the source must have the capture', () => {
  assert.deepEqual(load(bridge('      topic: t\n      key: ${1}\n', '[devices/+/telemetry, alarms]')), [
    "bridges/b.yaml:9:12: to[0].kafka.key: template '${1}': ${1} needs a 1st '+' wildcard, but the filter 'alarms' has none (from.mqtt)",
  ]);
});

test('topics that can never be valid Kafka topics are refused at load', () => {
  assert.deepEqual(load(bridge('      topic: iot telemetry\n')), [
    'bridges/b.yaml:8:14: to[0].kafka.topic: topic \'iot telemetry\': a Kafka topic is 1 to 249 letters, digits, ".", "_" or "-", and not "." or ".."; it has " "',
  ]);
  assert.deepEqual(load(bridge('      topic: iot/${1}\n')), [
    'bridges/b.yaml:8:14: to[0].kafka.topic: topic \'iot/${1}\': a Kafka topic is 1 to 249 letters, digits, ".", "_" or "-", and not "." or ".."; the template\'s text has "/"',
  ]);
  assert.equal(load(bridge("      topic: '..'\n")).length, 1);
  assert.match(load(bridge('      topic: iot.${nope}\n'))[0] ?? '', /to\[0\]\.kafka\.topic: template 'iot\.\$\{nope\}': unknown field/);
});

test("idempotent needs acks all and one request in flight; Ferry's own headers cannot be templated", () => {
  assert.deepEqual(load(bridge('      topic: t\n      headers:\n        ferry-id: x\n')), [
    'bridges/b.yaml:10:19: to[0].kafka.headers.ferry-id: ferry-id is set by Ferry (ferry-id and mqtt-topic are always sent); name this header otherwise',
  ]);
  assert.deepEqual(load(bridge('      topic: t\n      idempotent: true\n      acks: leader\n      maxInFlightRequests: 5\n')), [
    'bridges/b.yaml:10:13: to[0].kafka.acks: idempotent: true needs acks: all (an idempotent producer is only safe when every in-sync replica has the batch)',
    'bridges/b.yaml:11:28: to[0].kafka.maxInFlightRequests: idempotent: true needs maxInFlightRequests: 1 (kafkajs keeps sequence numbers in order only with one request in flight); remove it or set 1',
  ]);
  assert.deepEqual(load(bridge('      topic: t\n      idempotent: true\n      compression: zstd\n')), []);
});

test('a command topic is checked against its Kafka source: no MQTT captures there, but the key and headers', () => {
  const commands = (topic: string) => `name: b\nfrom:\n  kafka:\n    brokers: localhost:9092\n    groupId: g\n    topics: [cmds]\nto:\n  - devices:\n      topic: ${topic}\n`;
  assert.deepEqual(load(commands('devices/${key}/commands/${header.name}')), []);
  assert.deepEqual(load(commands('devices/${1}/commands')), [
    "bridges/b.yaml:9:14: to[0].devices.topic: template 'devices/${1}/commands': ${1} takes a level of the MQTT topic filter, but the 'kafka' source has no topic filters",
  ]);
});
