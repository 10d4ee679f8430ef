// Issue 14, items 5 and 7 (and the event loop of item 2): host and event-loop metrics, and the
// status page at GET / of the admin server, looked at in a real browser (Debian's chromium,
// driven by playwright-core; no browser is downloaded) against `ferry run` under light load.
// FERRY_STATUS_SCREENSHOT=docs/status-page.png keeps the page's picture there.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { connectAsync } from 'mqtt';
import { chromium } from 'playwright-core';
import { AdminServer } from '../../src/runtime/admin-server.ts';
import { HISTORY_BRIDGE } from '../harness/gateway-tree.ts';
import { FERRY_BIN, REPO_ROOT, type RunningFerry, startFerry } from '../harness/ferry-process.ts';
import { tempDirs } from '../harness/temp.ts';

const tempDir = tempDirs('ferry-status-page-');
const TOKEN = 'status-page-token-0123456789';
const CHROMIUM = process.env['FERRY_TEST_CHROMIUM'] ?? '/usr/bin/chromium';
const bearer = { authorization: `Bearer ${TOKEN}` };

let gw: RunningFerry;
let load: ChildProcess | undefined;

before(async () => {
  const root = tempDir();
  mkdirSync(join(root, 'bridges'));
  writeFileSync(join(root, 'bridges', 'history.yaml'), HISTORY_BRIDGE);
  writeFileSync(join(root, 'gateway.yaml'), `gateway: {name: site-7}\nmqtt: {allowAnonymous: loopback}\nadmin: {token: "${TOKEN}"}\nbridges: [bridges]\n`);
  gw = await startFerry(['--config', join(root, 'gateway.yaml'), '--data-dir', tempDir()]);
});

after(async () => {
  load?.kill('SIGKILL');
  gw.child.kill('SIGTERM');
  await gw.exited;
});

/** A few hundred messages a second into the history bridge, from five simulated devices (`ferry simulate`). */
function startLoad(seconds: number): ChildProcess {
  const profile = join(REPO_ROOT, 'devices', 'temperature-sensor.yaml');
  const child = spawn(process.execPath, [FERRY_BIN, 'simulate', '--profile', profile, '--url', gw.mqttUrl, '--devices', '5', '--rate', '300', '--duration', `${seconds}s`], {
    cwd: REPO_ROOT,
    stdio: 'ignore',
  });
  const kill = () => child.kill('SIGKILL');
  process.once('exit', kill);
  child.once('exit', () => process.off('exit', kill));
  return child;
}

/** Resolves once `check` holds, polling every 200 ms; fails after `timeoutMs`. */
async function until(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not so after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Debian's chromium in a fresh profile; a request to any other host than the gateway's admin server is refused and listed. */
async function openBrowser(adminUrl: string, credentials?: { username: string; password: string }) {
  assert.ok(existsSync(CHROMIUM), `no browser at ${CHROMIUM}: install Debian's chromium (apt-get install -y chromium; .ci/run does) or set FERRY_TEST_CHROMIUM`);
  const context = await chromium.launchPersistentContext(tempDir(), {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    ...(credentials === undefined ? {} : { httpCredentials: credentials }),
    viewport: { width: 1280, height: 1000 },
  });
  const elsewhere: string[] = [];
  await context.route('**/*', (route) => {
    if (route.request().url().startsWith(adminUrl)) return route.continue();
    elsewhere.push(route.request().url());
    return route.abort();
  });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' || message.type() === 'warning') problems.push(`console ${message.type()}: ${message.text()}`);
  });
  return { context, page, elsewhere, problems };
}

test('with admin.token, the page, its files and its data answer 401 without it; Bearer, or Basic with the token as password, pass', async () => {
  const basic = (password: string) => ({ authorization: `Basic ${Buffer.from(`anyone:${password}`).toString('base64')}` });
  for (const path of ['/', '/ui/status.js', '/ui/uplot.js', '/api/series', '/api/status', '/metrics']) {
    const refused = await fetch(`${gw.adminUrl}${path}`);
    assert.equal(refused.status, 401, path);
    assert.match(refused.headers.get('www-authenticate') ?? '', /Basic realm=/, `${path}: a browser is asked for the token`);
    assert.equal((await fetch(`${gw.adminUrl}${path}`, { headers: basic('wrong-token-wrong-token') })).status, 401, path);
    assert.equal((await fetch(`${gw.adminUrl}${path}`, { headers: basic(TOKEN) })).status, 200, path);
    assert.equal((await fetch(`${gw.adminUrl}${path}`, { headers: bearer })).status, 200, path);
  }
  const page = await fetch(`${gw.adminUrl}/`, { headers: bearer });
  assert.match(page.headers.get('content-type') ?? '', /^text\/html/);
  assert.match(page.headers.get('content-security-policy') ?? '', /script-src 'self'/);
  assert.equal((await fetch(`${gw.adminUrl}/healthz`)).status, 200, 'health stays open');
});

test('/metrics has the host and event-loop gauges with their HELP text; /api/status has them too', async () => {
  // The first reading comes within one period (2 s) of the start.
  let status: Record<string, any> = {};
  for (let i = 0; i < 20 && (status['host'] == null || status['eventLoop'] == null); i++) {
    status = (await (await fetch(`${gw.adminUrl}/api/status`, { headers: bearer })).json()) as Record<string, any>;
    if (status['eventLoop'] == null) await new Promise((r) => setTimeout(r, 500));
  }
  const { host, eventLoop } = status;
  assert.ok(host.memory.totalBytes > 0 && host.memory.processRssBytes > 0);
  assert.ok(host.disk.freeBytes > 0 && host.disk.freeBytes <= host.disk.totalBytes);
  assert.equal(typeof host.hostCpu, 'number');
  assert.equal(typeof host.processCpu, 'number');
  assert.equal(typeof host.network.receivedBytes, 'number');
  assert.ok(eventLoop.windowMs > 0 && eventLoop.delayMaxMs >= eventLoop.delayP99Ms && eventLoop.delayP99Ms >= eventLoop.delayP50Ms);
  assert.ok(eventLoop.utilisation > 0 && eventLoop.utilisation <= 1);

  const metrics = await (await fetch(`${gw.adminUrl}/metrics`, { headers: bearer })).text();
  for (const name of [
    'host_cpu_utilisation',
    'process_cpu_utilisation',
    'host_memory_total_bytes',
    'host_memory_available_bytes',
    'process_memory_rss_bytes',
    'host_disk_free_bytes',
    'host_network_received_bytes',
    'host_network_sent_bytes',
    'eventloop_delay_p50_seconds',
    'eventloop_delay_p99_seconds',
    'eventloop_delay_max_seconds',
    'eventloop_utilisation',
  ]) {
    assert.match(metrics, new RegExp(`^# HELP ferry_${name} [A-Z0-9].+$`, 'm'), name);
    assert.match(metrics, new RegExp(`^# TYPE ferry_${name} gauge$`, 'm'), name);
    assert.match(metrics, new RegExp(`^ferry_${name}(\\{[^}]*\\})? [0-9.e+-]+$`, 'm'), name);
  }
});

test('the status page, in Chromium under light load: live rates, depths, devices and host figures, changing between two looks; nothing from the network', async (t) => {
  load = startLoad(90);
  // One refusal for the page's table: a device publishing to a reserved topic.
  const rogue = await connectAsync(gw.mqttUrl, { clientId: 'sensor-rogue', reconnectPeriod: 0 });
  await rogue.publishAsync('$SYS/fake', 'x', { qos: 0 });
  const refusals = async () => {
    const { counters } = (await (await fetch(`${gw.adminUrl}/api/status`, { headers: bearer })).json()) as { counters: Record<string, number> };
    return Object.keys(counters).some((key) => key.startsWith('mqtt.publish.refused'));
  };
  await until(refusals, 10_000);
  rogue.end(true);
  const { context, page, elsewhere, problems } = await openBrowser(gw.adminUrl, { username: 'operator', password: TOKEN });
  try {
    await page.goto(`${gw.adminUrl}/`);

    // A look: the bridge's rate in, its sink's rate and pending count, devices, host CPU, the clock.
    const look = async () => {
      const card = page.locator('article.bridge', { hasText: 'history' });
      return {
        header: await page.locator('#facts').innerText(),
        updated: await page.locator('#updated').innerText(),
        bridge: await card.locator('h3').innerText(),
        sinks: await card.locator('table.sinks').innerText(),
        devices: await page.locator('#devices .big').innerText(),
        host: await page.locator('#host').innerText(),
        charts: await page.locator('#bridges canvas').count(),
      };
    };
    const rateIn = (text: string) => Number(/in (\d+(?:\.\d+)?)\/s/.exec(text)?.[1] ?? Number.NaN);
    // Wait for the five devices to send steadily: the page's rates and device count are taken
    // every 2 s, and the first point with traffic may cover mostly the time before it began.
    const MIN_RATE = 50; // 300 a second are sent; a busy test machine may take fewer.
    await until(async () => rateIn(await page.locator('article.bridge h3').innerText()) >= MIN_RATE && (await page.locator('#devices .big').innerText()) === '5', 30_000);
    const first = await look();
    await until(async () => (await page.locator('#updated').innerText()) !== first.updated, 10_000);
    await page.waitForTimeout(2500);
    const second = await look();
    t.diagnostic(`first: ${JSON.stringify(first)}`);
    t.diagnostic(`second: ${JSON.stringify(second)}`);

    for (const seen of [first, second]) {
      assert.ok(rateIn(seen.bridge) >= MIN_RATE, `messages a second in: ${seen.bridge}`);
      assert.match(seen.bridge, /running/);
      assert.match(seen.sinks, /history\s+\d+(\.\d)?\/s\s+\d+\s+/, 'the sink: written per second, pending');
      assert.equal(seen.devices, '5');
      assert.match(seen.host, /CPU \(Ferry\)\s+\d+\.\d %/);
      assert.match(seen.host, /disk free \(data dir\)\s+[\d.]+ [KMGT]iB of/);
      assert.match(seen.host, /event loop delay p50 \/ p99 \/ max\s+[\d.]+ ms/);
      assert.ok(seen.charts >= 1, 'the bridge has its chart');
    }
    assert.notEqual(second.updated, first.updated, 'it updated itself');
    assert.notEqual(second.header, first.header, 'uptime moved on');
    assert.notDeepEqual({ ...second, header: '', updated: '' }, { ...first, header: '', updated: '' }, 'the numbers changed');
    assert.match(await page.locator('#gateway').innerText(), /site-7/);
    assert.match(await page.locator('#upstream').innerText(), /Every sink is delivering/);
    assert.match(await page.locator('#recent').innerText(), /mqtt\.publish\.refused\s+reason=\w+\s+\+1\s+1\s/, 'the refusal, in the last 10 minutes');

    const screenshot = process.env['FERRY_STATUS_SCREENSHOT'] === undefined ? join(tempDir(), 'status-page.png') : resolve(REPO_ROOT, process.env['FERRY_STATUS_SCREENSHOT']);
    await page.screenshot({ path: screenshot, fullPage: true });
    t.diagnostic(`screenshot: ${screenshot}`);
    assert.deepEqual(elsewhere, [], 'the page asks nothing of another host');
    assert.deepEqual(problems, [], 'no script error, no refused resource (CSP)');
  } finally {
    await context.close();
  }
});

test('names and details from the gateway are shown as text: markup in them is not run nor rendered', async (t) => {
  // Bridge and sink names are checked by the config, but problem details quote upstream errors
  // (which can name a device's topic) and label values come from counters: the page must treat
  // all of it as text. The real status, with markup put into every name it shows.
  const real = (await (await fetch(`${gw.adminUrl}/api/status`, { headers: bearer })).json()) as Record<string, any>;
  const evil = (what: string) => `<img src=x onerror="window.ran='${what}'"><b>${what}</b>`;
  const status = {
    ...real,
    bridges: [{ ...real['bridges'][0], name: evil('bridge') }],
    buffer: { ...real['buffer'], bridges: [{ ...real['buffer'].bridges[0], bridge: evil('bridge'), sinks: [{ ...real['buffer'].bridges[0].sinks[0], sink: evil('sink') }] }] },
    health: { ready: true, degraded: [{ bridge: evil('bridge'), sink: evil('sink'), problem: 'down', detail: `publish to ${evil('topic')} failed`, since: Date.now() }] },
  };
  const series = {
    periodMs: 2000,
    points: [],
    recent: [{ name: 'mqtt.publish.refused', labels: { reason: evil('label') }, kind: 'refused', help: evil('help'), total: 1, inWindow: 1, lastAt: Date.now() }],
  };
  const server = await AdminServer.start('127.0.0.1', 0, { ready: () => ({ ready: true }), status: () => status, series: () => series });
  // Closed whatever happens: a server left open keeps the test's process from ending.
  t.after(() => server.close());
  const url = `http://127.0.0.1:${server.port}`;
  const { context, page, problems } = await openBrowser(url);
  try {
    await page.goto(`${url}/`);
    await until(async () => (await page.locator('#recent').innerText()).includes('label'), 15_000);
    const text = await page.locator('main').innerText();
    for (const what of ['bridge', 'sink', 'topic', 'label']) assert.ok(text.includes(`<img src=x onerror="window.ran='${what}'"><b>${what}</b>`), `${what} shown as written`);
    assert.equal(await page.locator('main img, main b').count(), 0, 'no element made from the data');
    assert.equal(await page.evaluate('window.ran'), undefined, 'no handler ran');
    assert.deepEqual(
      problems.filter((p) => !p.includes('404')),
      [],
    );
  } finally {
    await context.close();
  }
});
