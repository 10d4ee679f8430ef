import { readFileSync } from 'node:fs';
import { statfs } from 'node:fs/promises';
import { availableParallelism, cpus, freemem, totalmem } from 'node:os';

/** The machine and the process as one read saw them; a value the platform does not give is null. */
export interface HostReading {
  /** When it was read (ms since the epoch). */
  readonly at: number;
  /** CPU cores the process may use. */
  readonly cpus: number;
  /** Share of all cores' time the machine was busy since the previous read (0..1). */
  readonly hostCpu: number | null;
  /** Share of all cores' time this process used since the previous read (0..1; 0.5 on two cores is one core busy). */
  readonly processCpu: number | null;
  readonly memory: {
    readonly totalBytes: number;
    /** What the kernel could give to programs without swapping (MemAvailable). */
    readonly availableBytes: number;
    readonly processRssBytes: number;
    readonly processHeapUsedBytes: number;
  };
  /** The volume of the data directory (buffer.db), null when it cannot be read. */
  readonly disk: { readonly path: string; readonly freeBytes: number; readonly totalBytes: number } | null;
  /**
   * Bytes through the network interfaces since the machine started, and per second since the
   * previous read: in all (loopback and relays such as ifb, veth and bridges left out) and per
   * interface (loopback left out).
   */
  readonly network: {
    readonly receivedBytes: number;
    readonly sentBytes: number;
    readonly receivedBytesPerSecond: number | null;
    readonly sentBytesPerSecond: number | null;
    readonly interfaces: readonly { readonly name: string; readonly receivedBytes: number; readonly sentBytes: number }[];
  } | null;
}

/** Raw counters a reading is made from; kept to compute the next reading's rates. */
interface Raw {
  readonly at: number;
  readonly cpu: { readonly busy: number; readonly total: number } | null;
  readonly processMicros: number;
}

/**
 * Reads host and process figures from /proc (Linux), statfs for the data directory's volume and
 * the process itself. Each read costs a few small file reads; CPU shares and network rates are
 * worked out against the previous read, so the caller decides the period (Vitals: every 2 s).
 * Off Linux, /proc is missing: host CPU comes from os.cpus(), memory from os.freemem(), and the
 * network is null.
 */
export class HostMetrics {
  readonly #dataDir: string;
  readonly #procRoot: string;
  #previous: (Raw & { readonly network: HostReading['network'] }) | undefined;

  /** `procRoot` lets tests point at a made-up /proc. */
  constructor(dataDir: string, procRoot = '/proc') {
    this.#dataDir = dataDir;
    this.#procRoot = procRoot;
  }

  async read(now = Date.now()): Promise<HostReading> {
    const disk = await statfs(this.#dataDir).then(
      (s) => ({ path: this.#dataDir, freeBytes: s.bavail * s.bsize, totalBytes: s.blocks * s.bsize }),
      () => null,
    );
    const stat = this.#proc('stat');
    const cpu = stat === null ? cpuFromOs() : parseCpu(stat);
    const meminfoText = this.#proc('meminfo');
    const meminfo = meminfoText === null ? null : parseMeminfo(meminfoText);
    const netdevText = this.#proc('net/dev');
    const netdev = netdevText === null ? null : parseNetDev(netdevText);
    const usage = process.cpuUsage();
    const raw: Raw = { at: now, cpu, processMicros: usage.user + usage.system };
    const previous = this.#previous;
    const cores = availableParallelism();
    const elapsedSeconds = previous === undefined ? 0 : (now - previous.at) / 1000;
    const share = (value: number) => Math.min(1, Math.max(0, value));
    const hostCpu = previous?.cpu == null || cpu === null || cpu.total <= previous.cpu.total ? null : share((cpu.busy - previous.cpu.busy) / (cpu.total - previous.cpu.total));
    const processCpu = previous === undefined || elapsedSeconds <= 0 ? null : share((raw.processMicros - previous.processMicros) / 1e6 / elapsedSeconds / cores);
    const perSecond = (value: number, before: number | undefined) => (before === undefined || elapsedSeconds <= 0 || value < before ? null : (value - before) / elapsedSeconds);
    const network =
      netdev === null
        ? null
        : {
            ...netdev,
            receivedBytesPerSecond: perSecond(netdev.receivedBytes, previous?.network?.receivedBytes),
            sentBytesPerSecond: perSecond(netdev.sentBytes, previous?.network?.sentBytes),
          };
    this.#previous = { ...raw, network };
    const memory = process.memoryUsage();
    return {
      at: now,
      cpus: cores,
      hostCpu,
      processCpu,
      memory: {
        totalBytes: meminfo?.totalBytes ?? totalmem(),
        availableBytes: meminfo?.availableBytes ?? freemem(),
        processRssBytes: memory.rss,
        processHeapUsedBytes: memory.heapUsed,
      },
      disk,
      network,
    };
  }

  /**
   * A /proc file's text, or null. Read synchronously: the kernel makes it in memory, in
   * microseconds, where each asynchronous read took four trips through libuv's thread pool (open,
   * stat, read, close), waking its threads every 2 s of an idle gateway.
   */
  #proc(file: string): string | null {
    try {
      return readFileSync(`${this.#procRoot}/${file}`, 'utf8');
    } catch {
      return null;
    }
  }
}

/** The first line of /proc/stat: `cpu user nice system idle iowait irq softirq steal ...` in clock ticks; idle and iowait are not busy. */
export function parseCpu(text: string): { busy: number; total: number } | null {
  const line = text.split('\n').find((l) => l.startsWith('cpu '));
  if (line === undefined) return null;
  // guest and guest_nice (9th, 10th) are already counted in user and nice.
  const ticks = line.trim().split(/\s+/).slice(1, 9).map(Number);
  if (ticks.length < 4 || ticks.some((n) => !Number.isFinite(n))) return null;
  const total = ticks.reduce((a, b) => a + b, 0);
  const idle = (ticks[3] ?? 0) + (ticks[4] ?? 0);
  return { busy: total - idle, total };
}

function cpuFromOs(): { busy: number; total: number } | null {
  const all = cpus();
  if (all.length === 0) return null;
  let busy = 0;
  let total = 0;
  for (const { times } of all) {
    const sum = times.user + times.nice + times.sys + times.idle + times.irq;
    busy += sum - times.idle;
    total += sum;
  }
  return { busy, total };
}

/** MemTotal and MemAvailable of /proc/meminfo (kB). */
export function parseMeminfo(text: string): { totalBytes: number; availableBytes: number } | null {
  const kb = (key: string) => {
    const match = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text);
    return match === null ? undefined : Number(match[1]) * 1024;
  };
  const totalBytes = kb('MemTotal');
  const availableBytes = kb('MemAvailable') ?? kb('MemFree');
  return totalBytes === undefined || availableBytes === undefined ? null : { totalBytes, availableBytes };
}

/**
 * Interfaces that carry again what another interface carried (ifb mirrors ingress traffic; veth
 * pairs and bridges carry containers' traffic that the uplink also counts): listed, but left out
 * of the totals so that they count the machine's traffic once.
 */
const RELAYS = /^(ifb|veth|docker|br-|virbr|cni|flannel|cali)/;

/**
 * /proc/net/dev: per interface (loopback left out), bytes received (1st column) and sent (9th);
 * the totals leave relaying interfaces out too (RELAYS).
 */
export function parseNetDev(text: string): { receivedBytes: number; sentBytes: number; interfaces: { name: string; receivedBytes: number; sentBytes: number }[] } {
  const interfaces: { name: string; receivedBytes: number; sentBytes: number }[] = [];
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const name = line.slice(0, colon).trim();
    const fields = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/)
      .map(Number);
    if (name === 'lo' || fields.length < 9) continue;
    interfaces.push({ name, receivedBytes: fields[0] ?? 0, sentBytes: fields[8] ?? 0 });
  }
  const uplinks = interfaces.filter((i) => !RELAYS.test(i.name));
  return {
    receivedBytes: uplinks.reduce((sum, i) => sum + i.receivedBytes, 0),
    sentBytes: uplinks.reduce((sum, i) => sum + i.sentBytes, 0),
    interfaces,
  };
}
