import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { connect } from 'mqtt';
import { eventually } from '../harness/eventually.ts';
import { startFerry } from '../harness/ferry-process.ts';
import { kafkaTestClient } from '../harness/kafka-group.ts';
import { readTopic } from '../harness/kafka-read.ts';
import { startOtlpReceiver } from '../harness/otlp-receiver.ts';
import { randomName, requireService } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';

const dataDir = tempDirs('ferry-e2e-telemetry-');

const hex = (bytes: number) => randomBytes(bytes).toString('hex');

/** The OTLP `flags` of every span in the receiver's requests, by span id. */
function exportedFlags(raw: readonly string[]): Map<string, number> {
  const flags = new Map<string, number>();
  for (const body of raw) {
    for (const resource of JSON.parse(body).resourceSpans ?? []) {
      for (const scope of resource.scopeSpans) for (const span of scope.spans) flags.set(span.spanId, span.flags);
    }
  }
  return flags;
}

test('one trace runs from an MQTT 5 publish carrying traceparent through the Kafka record to the command sent back to the device; spans, metrics and trace ids in logs reach an OTLP receiver', async (t) => {
  const brokers = await requireService('kafka');
  const kafka = await kafkaTestClient(brokers);
  const receiver = await startOtlpReceiver();
  const telemetryTopic = randomName('ferry-e2e-otel-telemetry-');
  const commandsTopic = randomName('ferry-e2e-otel-commands-');
  await kafka.createTopic(telemetryTopic);
  await kafka.createTopic(commandsTopic);
  const gatewayName = randomName('gw-otel-');
  const gw = await startFerry(['--config', 'config/gateway.yaml', '--data-dir', dataDir(), '--log-level', 'debug'], {
    KAFKA_BROKERS: brokers.join(','),
    FERRY_KAFKA_TOPIC: telemetryTopic,
    FERRY_COMMANDS_TOPIC: commandsTopic,
    FERRY_COMMANDS_GROUP: randomName('ferry-e2e-otel-group-'),
    FERRY_COMMANDS_FROM_BEGINNING: 'true',
    FERRY_GATEWAY_NAME: gatewayName,
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_SERVICE_NAME: 'ferry-e2e',
    OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment=test,site=lab%201',
    // Only the device's trace and the command's: messages without a traceparent are not sampled.
    OTEL_TRACES_SAMPLER_ARG: '0',
  });
  t.after(async () => {
    gw.child.kill('SIGKILL');
    await Promise.all([kafka.close(), receiver.close()]);
  });

  const device = connect(gw.mqttUrl, { clientId: 'sensor-otel', protocolVersion: 5, reconnectPeriod: 0 });
  const commands: { topic: string; traceparent: unknown }[] = [];
  device.on('message', (topic, _payload, packet) => commands.push({ topic, traceparent: packet.properties?.userProperties?.['traceparent'] }));
  await new Promise<void>((resolve, reject) => device.once('connect', () => resolve()).once('error', reject));
  await device.subscribeAsync('devices/sensor-otel/commands/#', { qos: 1 });

  // The device's own trace: its span is the parent of the gateway's.
  const traceId = hex(16);
  const deviceSpan = hex(8);
  await device.publishAsync('devices/sensor-otel/telemetry/climate', '{"celsius":21.5}', {
    qos: 1,
    properties: { userProperties: { traceparent: `00-${traceId}-${deviceSpan}-01` } },
  });
  // And one without: at ratio 0 it is not traced, and its record carries no traceparent.
  await device.publishAsync('devices/sensor-otel/telemetry/climate', '{"celsius":22}', { qos: 1 });

  const records = await eventually(async () => {
    const read = await readTopic(brokers, telemetryTopic);
    assert.equal(read.length, 2);
    return read;
  });
  const traced = records.find((r) => r.value?.toString() === '{"celsius":21.5}');
  const untraced = records.find((r) => r.value?.toString() === '{"celsius":22}');
  const header = traced?.headers['traceparent'] ?? '';
  const [, recordTrace, gatewaySpan, flags] = header.split('-');
  assert.equal(recordTrace, traceId, 'the Kafka record continues the device trace');
  assert.notEqual(gatewaySpan, deviceSpan, "the record's parent is the gateway's span, not the device's");
  assert.equal(flags, '01');
  assert.equal(untraced?.headers['traceparent'], undefined);

  // The backend answers with a command in the same trace.
  const backendSpan = hex(8);
  await kafka.produce(commandsTopic, [{ key: 'sensor-otel', value: 'fan=on', headers: { traceparent: `00-${traceId}-${backendSpan}-01` } }]);
  await eventually(() => assert.equal(commands.length, 1));
  const [, commandTrace, commandParent] = String(commands[0]?.traceparent).split('-');
  assert.equal(commandTrace, traceId, 'the command reaches the device in the same trace');
  assert.notEqual(commandParent, backendSpan, "the device gets the gateway's span as parent");
  await device.endAsync();

  gw.child.kill('SIGTERM');
  assert.equal(await gw.exited, 0);

  // Shutdown flushed every exporter.
  const spans = receiver.spans.filter((s) => s.traceId === traceId);
  const ingress = spans.find((s) => s.spanId === gatewaySpan);
  assert.ok(ingress, `the span named in the Kafka header was exported (got ${spans.map((s) => s.name).join(', ')})`);
  assert.equal(ingress.parentSpanId, deviceSpan);
  assert.equal(ingress.name, 'receive telemetry-to-kafka');
  assert.equal(ingress.attributes['messaging.client.id'], 'sensor-otel');
  const send = spans.find((s) => s.name === 'send kafka' && s.parentSpanId === gatewaySpan);
  assert.ok(send, "a span for the Kafka sink's write of the message, child of its ingress span");
  // OTLP span flags: 0x100 says whether the parent is remote, 0x200 that it is. The device's span
  // is remote to the gateway; the send span's parent is the gateway's own receive span.
  const spanFlags = exportedFlags(receiver.raw);
  assert.equal(spanFlags.get(gatewaySpan ?? ''), 0x301, "the receive span's parent (the device's span) is remote");
  assert.equal(spanFlags.get(send.spanId), 0x101, "the send span's parent (the gateway's receive span) is local");
  // The batch span is a trace of its own (a batch carries messages of many traces), linking each.
  const batch = receiver.spans.find((s) => s.name === 'write kafka');
  assert.deepEqual(batch?.links, [{ traceId, spanId: gatewaySpan }], 'the batch span links the message span it carried');
  const command = spans.find((s) => s.spanId === commandParent);
  assert.ok(command, 'the command span was exported');
  assert.equal(command.parentSpanId, backendSpan);
  assert.equal(command.name, 'receive commands-to-devices');
  assert.deepEqual(
    receiver.spans
      .filter((s) => s.traceId !== traceId)
      .map((s) => s.name)
      .sort(),
    // The history bridge takes the same reading.
    ['write history', 'write kafka'],
    'nothing else sampled at ratio 0',
  );

  const resource = ingress.resource;
  assert.equal(resource['service.name'], 'ferry-e2e');
  assert.equal(resource['service.instance.id'], gatewayName);
  assert.equal(resource['ferry.gateway'], gatewayName);
  assert.equal(resource['deployment.environment'], 'test');
  assert.equal(resource['site'], 'lab 1');

  // Metrics: the catalogue under ferry.*, the histograms among them, with the gateway's resource.
  const point = (metric: string, attributes: Record<string, string> = {}) =>
    receiver.points.filter((p) => p.metric === metric && Object.entries(attributes).every(([k, v]) => p.attributes[k] === v)).at(-1);
  // Each reading is stored once per bridge taking it (Kafka, history, the example handlers).
  assert.ok((point('ferry.buffer.appended')?.value ?? 0) >= 4, 'readings stored');
  assert.equal(point('ferry.sink.messages.written', { bridge: 'telemetry-to-kafka', sink: 'kafka' })?.value, 2);
  assert.ok((point('ferry.buffer.commit_seconds')?.value ?? 0) >= 1, 'group commit histogram');
  assert.equal(point('ferry.sink.message_age_seconds', { bridge: 'telemetry-to-kafka', sink: 'kafka' })?.value, 2, 'message age histogram');
  assert.ok((point('ferry.sink.write_seconds', { bridge: 'telemetry-to-kafka', sink: 'kafka' })?.value ?? 0) >= 1, 'sink write histogram');
  assert.equal(point('ferry.up')?.kind, 'gauge');
  assert.equal(point('ferry.buffer.appended')?.resource['ferry.gateway'], gatewayName);

  // A line logged inside a span carries its ids: the Kafka batch's.
  const inSpan = gw.logs.find((l) => l['msg'] === 'writing a traced batch' && l['sink'] === 'kafka');
  assert.equal(inSpan?.['trace_id'], batch?.traceId);
  assert.equal(inSpan?.['span_id'], batch?.spanId);
  assert.equal(gw.logs.filter((l) => String(l['msg']).startsWith('accepting MQTT connections') && l['trace_id'] !== undefined).length, 0, 'lines outside spans carry no ids');
});

test('a failed traced sink write is logged with the span of that write: the sink down, its retry and a dead-lettered message carry its trace_id and span_id', async (t) => {
  const brokers = await requireService('kafka');
  const receiver = await startOtlpReceiver();
  const root = dataDir();
  mkdirSync(join(root, 'bridges'), { recursive: true });
  writeFileSync(join(root, 'gateway.yaml'), 'mqtt: {allowAnonymous: loopback}\nbridges: [bridges]\ndevices: []\nshutdown: {drainTimeoutMs: 1000}\n');
  // Nothing listens on port 1: each write fails at once, is retried, and the sink is down.
  writeFileSync(
    join(root, 'bridges', 'unreachable.yaml'),
    'name: to-unreachable\nfrom: {mqtt: {topics: ["devices/+/telemetry/#"]}}\nto:\n  - postgres: {url: "postgres://ferry@127.0.0.1:1/ferry", table: public.readings, columns: {id: "${id}"}}\nbuffer: {retryInitialMs: 100, retryMaxMs: 200}\n',
  );
  // The device's name is not an allowed topic: Kafka is up, the message is refused for good.
  writeFileSync(
    join(root, 'bridges', 'refused.yaml'),
    `name: to-refused\nfrom: {mqtt: {topics: ["devices/+/telemetry/#"]}}\nto:\n  - kafka: {brokers: "${brokers.join(',')}", topic: "\${1}", allowedTopics: [${randomName('ferry-e2e-otel-allowed-')}]}\n`,
  );
  const gw = await startFerry(['--config', join(root, 'gateway.yaml'), '--data-dir', join(root, 'data')], {
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_SERVICE_NAME: 'ferry-e2e',
    OTEL_TRACES_SAMPLER_ARG: '1',
  });
  t.after(async () => {
    gw.child.kill('SIGKILL');
    await receiver.close();
  });

  const device = connect(gw.mqttUrl, { clientId: 'sensor-fails', reconnectPeriod: 0 });
  await new Promise<void>((resolve, reject) => device.once('connect', () => resolve()).once('error', reject));
  await device.publishAsync('devices/sensor-fails/telemetry/climate', '{"celsius":20}', { qos: 1 });
  const bridgeLine = (bridge: string, msg: string) => gw.logs.filter((l) => l['bridge'] === bridge && l['msg'] === msg);
  await eventually(() => {
    assert.ok(bridgeLine('to-unreachable', 'write failed; will retry').length >= 2, 'retried at least twice');
    assert.equal(bridgeLine('to-refused', 'rejected for good: moved to dead letters').length, 1);
  });
  await device.endAsync();
  gw.child.kill('SIGTERM');
  assert.equal(await gw.exited, 0);

  // Each line names the span of the write it is about, exported with the write's error.
  const spanOf = (line: Record<string, unknown> | undefined) => receiver.spans.find((s) => s.traceId === line?.['trace_id'] && s.spanId === line?.['span_id']);
  const down = gw.logs.find((l) => l['bridge'] === 'to-unreachable' && String(l['msg']).startsWith("sink 'postgres' is down"));
  const downSpan = spanOf(down);
  assert.equal(downSpan?.name, 'write postgres', `the 'is down' line names a write span (${JSON.stringify(down)})`);
  assert.match(downSpan.error ?? '', /127\.0\.0\.1:1|ECONNREFUSED|connect/);
  const retries = bridgeLine('to-unreachable', 'write failed; will retry');
  const retrySpans = retries.map(spanOf);
  assert.ok(
    retrySpans.every((s) => s?.name === 'write postgres' && s.error !== undefined),
    'each retry line names its own failed write span',
  );
  assert.equal(new Set(retrySpans.map((s) => s?.spanId)).size, retries.length, 'one span per attempt');
  assert.equal(retrySpans[0]?.spanId, downSpan.spanId, 'the first failure is the write that found the sink down');
  const message = downSpan.links[0];
  assert.ok(message !== undefined, "the write span links the message's span");

  const dead = bridgeLine('to-refused', 'rejected for good: moved to dead letters')[0];
  const deadSpan = spanOf(dead);
  assert.equal(deadSpan?.name, 'write kafka', `the dead-letter line names the write that refused the message (${JSON.stringify(dead)})`);
  assert.equal(deadSpan.links.length, 1);
  assert.equal(gw.logs.filter((l) => String(l['msg']).startsWith('accepting MQTT connections') && l['trace_id'] !== undefined).length, 0, 'lines about no write carry no ids');
});
