// Issue 12: a shared subscription `$share/<group>/<filter>` is judged by the device's ACL on
// its filter, on `ferry run` with logins.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { MqttClient } from 'mqtt';
import { eventually } from '../harness/eventually.ts';
import { type RunningFerry, startFerry } from '../harness/ferry-process.ts';
import { credential, writeGatewayTree } from '../harness/gateway-tree.ts';
import { connectMqtt5 } from '../harness/mqtt5-gateway.ts';
import { randomName } from '../harness/services.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-issue12-shared-acl-');
let gw: RunningFerry;
const clients: MqttClient[] = [];

before(async () => {
  const root = tempDir();
  const config = writeGatewayTree(root, '{allowAnonymous: false}', {
    'worker.yaml': `name: worker\ncredentials:\n${await credential('worker', 'worker-secret-1', ', clientId: "*"')}acl: {publish: ["jobs/#", "secrets/#"], subscribe: ["jobs/#"]}\n`,
  });
  gw = await startFerry(['--config', config, '--data-dir', join(root, 'data')]);
});

after(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true)));
  gw.child.kill('SIGTERM');
  await gw.exited;
});

for (const protocolVersion of [5, 4] as const) {
  test(`MQTT ${protocolVersion === 5 ? '5' : '3.1.1'}: a shared subscription is granted when the ACL allows its filter, refused when it does not`, async () => {
    const worker = await connectMqtt5(gw.mqttUrl, randomName('worker-'), { protocolVersion, username: 'worker', password: 'worker-secret-1' });
    clients.push(worker.client);
    const group = randomName('g');
    // mqtt.js rejects a SUBACK with a refusal in it, and gives the packet with the error.
    const suback = await worker.client.subscribeAsync({ [`$share/${group}/jobs/+`]: { qos: 1 }, [`$share/${group}/secrets/+`]: { qos: 1 } }).then(
      () => assert.fail('one subscription is outside the ACL'),
      (error: { packet?: { granted?: number[] } }) => error.packet,
    );
    assert.deepEqual(suback?.granted, [1, protocolVersion === 5 ? 0x87 : 0x80]);
    for (const topic of ['secrets/a', 'jobs/a']) await worker.client.publishAsync(topic, topic, { qos: 1 });
    await eventually(() => assert.equal(worker.publishes.at(-1)?.payload.toString(), 'jobs/a'));
    assert.deepEqual(
      worker.publishes.map((p) => p.payload.toString()),
      ['jobs/a'],
    );
  });
}
