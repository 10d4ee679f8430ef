// Ferry's status page: polls /api/status and /api/series every 2 s and draws them.
// Everything that comes from the gateway (bridge, sink and label names, reasons, details) is put
// into the page as text (textContent), never as HTML: names can come from devices.
/* global uPlot */

const PERIOD_MS = 2000;
const WINDOW_MS = 10 * 60 * 1000;
const COLOURS = ['#2563eb', '#16a34a', '#d97706', '#9333ea', '#dc2626', '#0891b2', '#4b5563'];

/** Points received so far (the last 10 minutes), and the newest one's time. */
let points = [];
let after = 0;
/** Charts by key, with the series labels they were built for. */
const charts = new Map();

// ---- small DOM helpers: text only ---------------------------------------------------------

function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'class') node.className = value;
    else if (key === 'title') node.title = value;
    else node.setAttribute(key, value);
  }
  for (const child of children.flat(Infinity)) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function replace(id, ...children) {
  document.getElementById(id).replaceChildren(...children.flat(Infinity));
}

function table(head, rows) {
  return [
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        head.map((c) => h('th', {}, c)),
      ),
    ),
    h(
      'tbody',
      {},
      rows.map((r) =>
        h(
          'tr',
          {},
          r.map((c) => (c instanceof Node ? c : h('td', {}, c))),
        ),
      ),
    ),
  ];
}

// ---- formatting ---------------------------------------------------------------------------

const rate = (n) => (n === undefined || n === null ? '–' : n >= 100 ? `${Math.round(n)}/s` : `${n.toFixed(1)}/s`);
const percent = (ratio) => (ratio === null || ratio === undefined ? '–' : `${(ratio * 100).toFixed(1)} %`);
const ms = (n) => (n === null || n === undefined ? '–' : `${n.toFixed(n < 10 ? 2 : 0)} ms`);

function bytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

function age(msAgo) {
  if (msAgo === null || msAgo === undefined) return '–';
  const s = Math.max(0, Math.round(msAgo / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

const clock = (t) => new Date(t).toLocaleTimeString();
const labelText = (labels) =>
  Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(', ');

// ---- charts -------------------------------------------------------------------------------

/**
 * Draws (or updates) a time-series chart in `container`: `series` are [label, valueOf(point)]
 * pairs; the y axis starts at 0 and reaches at least `floor`. A chart is built again only when
 * its series change (a sink added by a reload).
 */
function chart(key, container, title, series, format, floor = 1) {
  const labels = series.map(([label]) => label).join('\u0000');
  const data = [points.map((p) => p.t / 1000), ...series.map(([, value]) => points.map((p) => value(p) ?? null))];
  const existing = charts.get(key);
  if (existing !== undefined && existing.labels === labels && existing.container === container) {
    existing.plot.setData(data);
    return;
  }
  if (existing !== undefined) {
    resizes.unobserve(existing.container);
    existing.plot.destroy();
  }
  const width = Math.max(280, container.clientWidth || 280);
  const plot = new uPlot(
    {
      title,
      width,
      height: 160,
      legend: { live: false },
      cursor: { show: false },
      scales: { y: { range: (_u, _min, max) => [0, Math.max((max ?? 0) * 1.1, floor)] } },
      axes: [{ space: 90 }, { size: 60, values: (_u, ticks) => ticks.map(format) }],
      series: [{}, ...series.map(([label], i) => ({ label, stroke: COLOURS[i % COLOURS.length], width: 1.5, value: (_u, v) => (v === null ? '–' : format(v)) }))],
    },
    data,
    container,
  );
  charts.set(key, { plot, labels, container });
  resizes.observe(container);
}

/** Charts follow their box's width (the window resized, a card added beside them). */
const resizes = new ResizeObserver((entries) => {
  for (const { target } of entries) {
    for (const c of charts.values()) if (c.container === target) c.plot.setSize({ width: Math.max(280, target.clientWidth), height: 160 });
  }
});

// ---- sections -----------------------------------------------------------------------------

function renderHeader(status) {
  document.getElementById('gateway').textContent = status.gateway;
  const ready = status.health.ready ? (status.health.degraded.length > 0 ? 'degraded' : 'ready') : 'not ready';
  const badge = document.getElementById('state');
  badge.textContent = status.state === 'running' ? ready : status.state;
  badge.className = `badge ${ready.replace(' ', '-')}`;
  document.getElementById('facts').textContent = `v${status.version} · up ${age(status.uptimeSeconds * 1000)} · ${status.dataDir}`;
  const problem = document.getElementById('problem');
  problem.hidden = status.health.reason === undefined;
  problem.textContent = status.health.reason ?? '';
}

function renderUpstream(status) {
  const degraded = status.health.degraded;
  if (degraded.length === 0) return replace('upstream', h('li', { class: 'ok' }, 'Every sink is delivering.'));
  replace(
    'upstream',
    degraded.map((d) =>
      h(
        'li',
        { class: 'bad' },
        h('strong', {}, d.problem),
        ` ${d.bridge}${d.sink === undefined ? '' : ` → ${d.sink}`}: ${d.detail}`,
        h('span', { class: 'since' }, ` since ${clock(d.since)}`),
      ),
    ),
  );
}

function renderBridges(status, latest) {
  const root = document.getElementById('bridges');
  const buffered = new Map(status.buffer.bridges.map((b) => [b.bridge, b]));
  const now = Date.now();
  const cards = status.bridges.map((bridge) => {
    const stats = buffered.get(bridge.name);
    const id = `bridge:${bridge.name}`;
    // Cards are kept by bridge name so that their charts survive the next update.
    let card = [...root.children].find((c) => c.dataset.key === id);
    if (card === undefined) {
      card = h('article', { class: 'bridge' }, h('h3'), h('div', { class: 'chart' }), h('table', { class: 'sinks' }));
      card.dataset.key = id;
    }
    const [title, chartBox, sinkTable] = card.children;
    title.replaceChildren(
      bridge.name,
      h('span', { class: `badge ${bridge.state}` }, bridge.state),
      h('span', { class: 'rate' }, `in ${rate(latest === undefined ? undefined : (latest.in[bridge.name] ?? 0))}`),
      h('span', { class: 'muted' }, `${stats?.messages ?? 0} held · ${bytes(stats?.bytes ?? 0)} · ${stats?.deadLetters ?? 0} dead letters`),
    );
    const sinkRows = (stats?.sinks ?? []).map((s) => [
      s.sink,
      rate(latest === undefined ? undefined : (latest.written[bridge.name]?.[s.sink] ?? 0)),
      String(s.pending),
      s.oldestPendingAt === null ? '–' : age(now - s.oldestPendingAt),
      String(s.deadLetters),
    ]);
    sinkTable.replaceChildren(...table(['sink', 'written', 'pending', 'oldest pending', 'dead letters'], sinkRows));
    return { card, chartBox, sinks: (stats?.sinks ?? []).map((s) => s.sink), name: bridge.name };
  });
  root.replaceChildren(...cards.map((c) => c.card));
  if (cards.length === 0) root.replaceChildren(h('p', { class: 'muted' }, 'No bridge runs.'));
  for (const { chartBox, sinks, name } of cards) {
    // A counter appears at its first message: none yet is a rate of 0.
    chart(`bridge:${name}`, chartBox, '', [['in', (p) => p.in[name] ?? 0], ...sinks.map((sink) => [`→ ${sink}`, (p) => p.written[name]?.[sink] ?? 0])], rate);
  }
}

function renderDevices(status, latest) {
  const sockets = status.listeners.filter((l) => l.clients !== undefined).map((l) => `${l.protocol} ${l.host}:${l.port}: ${l.clients} open`);
  replace('devices', h('p', {}, h('span', { class: 'big' }, String(latest?.devices ?? '–')), ' connected'), h('p', { class: 'muted' }, sockets.join(' · ')));
  chart('devices', document.getElementById('devices-chart'), 'connected devices', [['devices', (p) => p.devices]], (v) => String(Math.round(v)));
}

function renderRecent(recent) {
  const rows = [...recent]
    .sort((a, b) => (b.lastAt ?? 0) - (a.lastAt ?? 0) || b.total - a.total)
    .map((r) => [
      h('td', { title: r.help }, r.name),
      labelText(r.labels),
      h('td', { class: r.inWindow > 0 ? 'bad' : '' }, r.inWindow > 0 ? `+${r.inWindow}` : '0'),
      String(r.total),
      r.lastAt === null ? '–' : clock(r.lastAt),
    ]);
  const target = document.getElementById('recent');
  if (rows.length === 0) target.replaceChildren(h('tbody', {}, h('tr', {}, h('td', { class: 'ok' }, 'None since the gateway started.'))));
  else target.replaceChildren(...table(['counter', 'labels', 'last 10 min', 'total', 'last'], rows));
}

function renderHost(status) {
  const host = status.host;
  const loop = status.eventLoop;
  const facts = [
    ['CPU (machine)', percent(host?.hostCpu)],
    ['CPU (Ferry)', percent(host?.processCpu)],
    ['cores', host?.cpus ?? '–'],
    ['memory available', host === null ? '–' : `${bytes(host.memory.availableBytes)} of ${bytes(host.memory.totalBytes)}`],
    ['Ferry RSS', bytes(host?.memory.processRssBytes)],
    ['heap', bytes(host?.memory.processHeapUsedBytes)],
    ['disk free (data dir)', host?.disk === null || host === null ? '–' : `${bytes(host.disk.freeBytes)} of ${bytes(host.disk.totalBytes)}`],
    ['network in', host?.network ? `${bytes(host.network.receivedBytesPerSecond)}/s` : '–'],
    ['network out', host?.network ? `${bytes(host.network.sentBytesPerSecond)}/s` : '–'],
    ['event loop delay p50 / p99 / max', loop === null ? '–' : `${ms(loop.delayP50Ms)} / ${ms(loop.delayP99Ms)} / ${ms(loop.delayMaxMs)}`],
    ['event loop busy', percent(loop?.utilisation)],
  ];
  replace(
    'host',
    h(
      'dl',
      {},
      facts.map(([k, v]) => [h('dt', {}, k), h('dd', {}, String(v))]),
    ),
  );
  chart(
    'cpu',
    document.getElementById('cpu-chart'),
    'CPU',
    [
      ['machine', (p) => p.hostCpu],
      ['Ferry', (p) => p.processCpu],
    ],
    (v) => `${Math.round(v * 100)} %`,
    0.05,
  );
  chart('loop', document.getElementById('loop-chart'), 'event loop delay p99', [['p99', (p) => p.loopDelayP99Ms]], (v) => `${v.toFixed(v < 10 ? 1 : 0)} ms`);
}

// ---- polling ------------------------------------------------------------------------------

async function getJson(path) {
  const answer = await fetch(path, { cache: 'no-store', headers: { accept: 'application/json' } });
  if (answer.status === 401) throw new Error('the admin server wants its token (admin.token): reload the page and give it as the password');
  if (!answer.ok) throw new Error(`${path}: HTTP ${answer.status}`);
  return answer.json();
}

async function update() {
  const [status, series] = await Promise.all([getJson('/api/status'), getJson(`/api/series?after=${after}`)]);
  points = [...points, ...series.points].filter((p) => p.t > Date.now() - WINDOW_MS);
  after = points.at(-1)?.t ?? after;
  const latest = points.at(-1);
  renderHeader(status);
  renderUpstream(status);
  renderBridges(status, latest);
  renderDevices(status, latest);
  renderRecent(series.recent);
  renderHost(status);
  document.getElementById('updated').textContent = `updated ${clock(Date.now())}`;
}

async function loop() {
  // A hidden tab does not poll: a forgotten tab costs the gateway nothing.
  if (!document.hidden) {
    try {
      await update();
      document.body.classList.remove('offline');
    } catch (error) {
      document.body.classList.add('offline');
      document.getElementById('updated').textContent = `not updated: ${error.message}`;
    }
  }
  setTimeout(loop, PERIOD_MS);
}

document.addEventListener('visibilitychange', () => {
  if (!document.hidden) update().catch(() => {});
});
loop();
