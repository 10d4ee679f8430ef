import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { EventLoopMonitor } from '../../../src/observability/event-loop.ts';
import { HostMetrics, parseCpu, parseMeminfo, parseNetDev } from '../../../src/observability/host-metrics.ts';
import { tempDirs } from '../../harness/temp.ts';

const tempDir = tempDirs('ferry-host-');

const NET_DEV = (eth0Rx: number, eth0Tx: number) => `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 9999999    1000    0    0    0     0          0         0  9999999    1000    0    0    0     0       0          0
  eth0: ${eth0Rx}  2000    0    0    0     0          0         0  ${eth0Tx}  1500    0    0    0     0       0          0
 wlan0: 500       10    0    0    0     0          0         0      700      10    0    0    0     0       0          0
  ifb0: 40000      10    0    0    0     0          0         0    40000      10    0    0    0     0       0          0
`;

/** A made-up /proc: `busy` and `idle` ticks on the cpu line, eth0's byte counts. */
function fakeProc(root: string, cpu: { busy: number; idle: number }, net: { rx: number; tx: number }): void {
  mkdirSync(join(root, 'net'), { recursive: true });
  // user nice system idle iowait irq softirq steal guest guest_nice: guest is already in user.
  writeFileSync(join(root, 'stat'), `cpu  ${cpu.busy} 0 0 ${cpu.idle} 0 0 0 0 777 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n`);
  writeFileSync(join(root, 'meminfo'), 'MemTotal:        8000000 kB\nMemFree:          100000 kB\nMemAvailable:    6000000 kB\n');
  writeFileSync(join(root, 'net/dev'), NET_DEV(net.rx, net.tx));
}

test('/proc parsers: busy CPU ticks (iowait idle, guest not twice), MemAvailable, network bytes without loopback nor mirrors', () => {
  assert.deepEqual(parseCpu('cpu  100 10 50 800 40 5 5 0 30 0\n'), { busy: 170, total: 1010 });
  assert.equal(parseCpu('intr 1 2 3\n'), null);
  assert.deepEqual(parseMeminfo('MemTotal:  2048 kB\nMemAvailable:  1024 kB\n'), { totalBytes: 2048 * 1024, availableBytes: 1024 * 1024 });
  assert.deepEqual(parseMeminfo('MemTotal:  2048 kB\nMemFree:  512 kB\n'), { totalBytes: 2048 * 1024, availableBytes: 512 * 1024 }, 'old kernels: MemFree');
  const net = parseNetDev(NET_DEV(1000, 2000));
  assert.deepEqual(
    net.interfaces.map((i) => i.name),
    ['eth0', 'wlan0', 'ifb0'],
  );
  assert.deepEqual([net.receivedBytes, net.sentBytes], [1500, 2700], 'ifb0 mirrors eth0: not counted twice');
});

test('HostMetrics: CPU shares and network rates against the previous read; the data volume from statfs', async () => {
  const proc = tempDir();
  const dataDir = tempDir();
  const host = new HostMetrics(dataDir, proc);
  fakeProc(proc, { busy: 1000, idle: 3000 }, { rx: 10_000, tx: 4_000 });
  const first = await host.read(1_000_000);
  assert.equal(first.hostCpu, null, 'no previous read: no share yet');
  assert.equal(first.processCpu, null);
  assert.equal(first.network?.receivedBytesPerSecond, null);
  assert.deepEqual(first.memory.totalBytes, 8_000_000 * 1024);
  assert.deepEqual(first.memory.availableBytes, 6_000_000 * 1024);
  assert.ok(first.memory.processRssBytes > 10e6, "this process's RSS");
  assert.equal(first.disk?.path, dataDir);
  assert.ok((first.disk?.freeBytes ?? 0) > 0 && (first.disk?.freeBytes ?? 0) <= (first.disk?.totalBytes ?? 0));

  fakeProc(proc, { busy: 1300, idle: 3100 }, { rx: 30_000, tx: 5_000 });
  const second = await host.read(1_002_000);
  assert.equal(second.hostCpu, 0.75, '300 busy of 400 ticks');
  assert.ok(second.processCpu !== null && second.processCpu >= 0 && second.processCpu <= 1);
  assert.equal(second.network?.receivedBytesPerSecond, 20_000 / 2, 'eth0 only changed; 2 s');
  assert.equal(second.network?.sentBytesPerSecond, 500);
});

test('HostMetrics without /proc (another platform, a locked-down container): os figures, no network, no crash', async () => {
  const host = new HostMetrics(join(tempDir(), 'missing-dir'), join(tempDir(), 'no-proc'));
  const reading = await host.read();
  assert.equal(reading.network, null);
  assert.equal(reading.disk, null, 'a data directory that is not there');
  assert.ok(reading.memory.totalBytes > 0);
  assert.ok(reading.cpus >= 1);
});

test('EventLoopMonitor: a window with the loop blocked 120 ms shows it in max and p99; the next window starts afresh', async () => {
  const monitor = new EventLoopMonitor();
  try {
    await new Promise((resolve) => setTimeout(resolve, 50));
    const until = performance.now() + 120;
    while (performance.now() < until);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const blocked = monitor.roll();
    assert.ok(blocked.delayMaxMs >= 100, `max ${blocked.delayMaxMs} ms`);
    assert.ok(blocked.delayP50Ms < blocked.delayMaxMs);
    assert.ok(blocked.utilisation > 0.3 && blocked.utilisation <= 1, `utilisation ${blocked.utilisation}`);
    assert.ok(blocked.windowMs >= 250);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const calm = monitor.roll();
    assert.ok(calm.delayMaxMs < blocked.delayMaxMs, `max ${calm.delayMaxMs} ms after the block`);
  } finally {
    monitor.stop();
  }
});

test('EventLoopMonitor: after an idle window its timer runs at the idle period, and a stall brings the busy one back', async () => {
  // The idle line well above what a waiting test process spends (its own 10 ms timer and the
  // test runner's work took 2-3% of a window on a loaded CI machine); the stall below is ~45%.
  const monitor = new EventLoopMonitor({ busyResolutionMs: 10, idleResolutionMs: 100, idleBelow: 0.1 });
  try {
    assert.equal(monitor.resolutionMs, 10, 'a start is timed finely');
    await new Promise((resolve) => setTimeout(resolve, 300));
    const idle = monitor.roll();
    assert.equal(idle.resolutionMs, 10);
    assert.ok(idle.utilisation < 0.1, `utilisation ${idle.utilisation}`);
    assert.equal(monitor.resolutionMs, 100, 'idle: the next window is timed every 100 ms');

    await new Promise((resolve) => setTimeout(resolve, 150));
    const until = performance.now() + 250;
    while (performance.now() < until);
    await new Promise((resolve) => setTimeout(resolve, 150));
    const stalled = monitor.roll();
    assert.equal(stalled.resolutionMs, 100);
    assert.ok(stalled.delayMaxMs >= 100, `a 250 ms stall seen by the idle timer: max ${stalled.delayMaxMs} ms`);
    assert.equal(monitor.resolutionMs, 10, 'busy: back to every 10 ms');
  } finally {
    monitor.stop();
  }
});
