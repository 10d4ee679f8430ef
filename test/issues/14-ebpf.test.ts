import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { connectAsync } from 'mqtt';
import { eventually } from '../harness/eventually.ts';
import { startFerry } from '../harness/ferry-process.ts';
import { tempDirs } from '../harness/temp.ts';

const dataDir = tempDirs('ferry-ebpf-');

/** One sample of /metrics, summed over the series whose labels contain `match`. */
async function metric(adminUrl: string, name: string, match = ''): Promise<number> {
  const text = await (await fetch(`${adminUrl}/metrics`)).text();
  return text
    .split('\n')
    .filter((line) => line.startsWith(name) && (line[name.length] === ' ' || line[name.length] === '{') && line.includes(match))
    .reduce((sum, line) => sum + Number(line.split(' ').pop()), 0);
}

async function publish(mqttUrl: string, count: number): Promise<void> {
  const device = await connectAsync(mqttUrl, { clientId: 'ebpf-sensor', reconnectPeriod: 0 });
  try {
    // QoS 1, one at a time: each PUBACK waits for its own group commit, so each is an fsync.
    for (let i = 0; i < count; i++) await device.publishAsync('devices/ebpf-sensor/telemetry/t', JSON.stringify({ i }), { qos: 1 });
  } finally {
    await device.endAsync();
  }
}

test('with bpftrace (as root), the fsync latency histogram of a real run has samples, and on-CPU samples are counted by thread', async (t) => {
  assert.equal(process.getuid?.(), 0, 'the eBPF collector needs root: run the tests as root');
  const gw = await startFerry(['--config', 'config/gateway.yaml', '--data-dir', dataDir()]);
  t.after(() => gw.child.kill('SIGKILL'));
  await eventually(
    () =>
      assert.ok(
        gw.logs.some((l) => String(l['msg']).startsWith('eBPF collector on')),
        'bpftrace attached',
      ),
    { timeoutMs: 30_000 },
  );
  await publish(gw.mqttUrl, 100);
  // bpftrace hands over what it counted every 5 s.
  await eventually(async () => assert.ok((await metric(gw.adminUrl, 'ferry_ebpf_fsync_seconds_count')) >= 100, 'at least one fsync per commit'), {
    timeoutMs: 30_000,
    intervalMs: 500,
  });
  assert.ok((await metric(gw.adminUrl, 'ferry_ebpf_fsync_seconds_bucket', 'le="+Inf"')) >= 100);
  assert.ok((await metric(gw.adminUrl, 'ferry_ebpf_cpu_samples_total', 'thread="node"')) > 0, 'on-CPU samples of the main thread');
  gw.child.kill('SIGTERM');
  assert.equal(await gw.exited, 0);
});

test("with bpftrace, the fsync histogram holds the gateway's calls only: another process's fsyncs are not counted", { timeout: 90_000 }, async (t) => {
  assert.equal(process.getuid?.(), 0, 'the eBPF collector needs root: run the tests as root');
  const gw = await startFerry(['--config', 'config/gateway.yaml', '--data-dir', dataDir()]);
  t.after(() => gw.child.kill('SIGKILL'));
  await eventually(() => assert.ok(gw.logs.some((l) => String(l['msg']).startsWith('eBPF collector on'))), { timeoutMs: 30_000 });
  const before = await metric(gw.adminUrl, 'ferry_ebpf_fsync_seconds_count');
  // Another process on the host (a database, a broker) syncing a file of its own, 3,000 times.
  const file = join(dataDir(), 'other-process.bin');
  const other = spawnSync(
    process.execPath,
    ['-e', `const fs = require('node:fs'); const fd = fs.openSync(${JSON.stringify(file)}, 'w'); for (let i = 0; i < 3000; i++) { fs.writeSync(fd, 'x'); fs.fsyncSync(fd); }`],
    { stdio: 'inherit' },
  );
  assert.equal(other.status, 0);
  // Then the gateway's own: 20 commits, each synced, and one interval of bpftrace for all of it.
  await publish(gw.mqttUrl, 20);
  await eventually(async () => assert.ok((await metric(gw.adminUrl, 'ferry_ebpf_fsync_seconds_count')) >= before + 20, "the gateway's syncs"), {
    timeoutMs: 30_000,
    intervalMs: 500,
  });
  await sleep(6000);
  const counted = (await metric(gw.adminUrl, 'ferry_ebpf_fsync_seconds_count')) - before;
  assert.ok(counted < 1000, `${counted} fsync calls counted for 20 commits: the other process's 3,000 were counted too`);
  gw.child.kill('SIGTERM');
  assert.equal(await gw.exited, 0);
});

test('without bpftrace the gateway logs one line saying why and runs on', async (t) => {
  // PATH with node only: no bpftrace to find.
  const gw = await startFerry(['--config', 'config/gateway.yaml', '--data-dir', dataDir()], { PATH: dirname(process.execPath) });
  t.after(() => gw.child.kill('SIGKILL'));
  await eventually(() => assert.ok(gw.logs.some((l) => String(l['msg']).startsWith('eBPF collector off'))));
  await publish(gw.mqttUrl, 5);
  await eventually(async () => assert.ok((await metric(gw.adminUrl, 'ferry_buffer_appended_total')) >= 5, 'stored'));
  const lines = gw.logs.filter((l) => String(l['msg']).includes('eBPF'));
  assert.deepEqual(
    lines.map((l) => l['msg']),
    ['eBPF collector off: bpftrace is not installed (Debian package bpftrace)'],
  );
  assert.equal(await metric(gw.adminUrl, 'ferry_ebpf_fsync_seconds_count'), 0);
  gw.child.kill('SIGTERM');
  assert.equal(await gw.exited, 0);
});
