import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import type { Logger } from 'pino';
import type { Counters, HistogramSeries } from '../core/component.ts';

/** How often bpftrace hands over what it counted. */
const INTERVAL_S = 5;
const CALLS = ['fsync', 'fdatasync'] as const;

/**
 * bpftrace's program: fsync/fdatasync latency (uprobes on libc) and on-CPU samples by thread, of
 * this process only. Every probe filters on the pid: `-p` does not, and a uprobe on the shared
 * libc fires in every process that maps it (a database, a broker on the same host).
 */
function program(libc: string, pid: number): string {
  const probes = CALLS.map(
    (call) =>
      `uprobe:${libc}:${call} /pid == ${pid}/ { @start_${call}[tid] = nsecs; }\n` +
      `uretprobe:${libc}:${call} /pid == ${pid} && @start_${call}[tid]/ { @${call} = hist((nsecs - @start_${call}[tid]) / 1000); delete(@start_${call}[tid]); }`,
  );
  return [
    ...probes,
    `profile:hz:99 /pid == ${pid}/ { @cpu[comm] = count(); }`,
    `interval:s:${INTERVAL_S} { ${CALLS.map((c) => `print(@${c}); clear(@${c});`).join(' ')} print(@cpu); clear(@cpu); }`,
  ].join('\n');
}

export interface EbpfOptions {
  readonly logger: Logger;
  readonly counters: Counters;
  /** The process to watch; this one by default. */
  readonly pid?: number;
  /** The bpftrace command, looked up in PATH; `bpftrace` by default. */
  readonly command?: string;
}

/**
 * The eBPF collector: runs bpftrace (Debian package `bpftrace`) as a child that watches this
 * process, and turns what it prints each interval into `ebpf.fsync_seconds{call}` and
 * `ebpf.cpu_samples{thread}`. Uprobes and `profile` need no tracefs, which many kernels (and
 * containers) do not mount, so TCP tracepoints and kprobes are not used. When bpftrace is
 * missing, not permitted or fails to attach, it logs one line saying why and stops; the
 * gateway runs on. bpftrace's `-p` ends it with the gateway, even after a kill -9.
 */
export class EbpfCollector {
  readonly #logger: Logger;
  readonly #counters: Counters;
  #child: ChildProcess | undefined;
  #attached = false;
  readonly #histograms = new Map<string, HistogramSeries | undefined>();

  private constructor(options: EbpfOptions) {
    this.#logger = options.logger;
    this.#counters = options.counters;
  }

  /** Starts the collector, or logs why it cannot run and returns undefined. */
  static start(options: EbpfOptions): EbpfCollector | undefined {
    const pid = options.pid ?? process.pid;
    const bpftrace = options.command ?? 'bpftrace';
    const unavailable = (reason: string) => {
      options.logger.info({ reason }, `eBPF collector off: ${reason}`);
      return undefined;
    };
    if (process.getuid?.() !== 0) return unavailable('not running as root: bpftrace needs CAP_BPF and CAP_PERFMON');
    const libc = libcOf(pid);
    if (libc === undefined) return unavailable(`no libc mapped in process ${pid} (/proc/${pid}/maps)`);
    const collector = new EbpfCollector(options);
    collector.#run(bpftrace, libc, pid);
    return collector;
  }

  #run(bpftrace: string, libc: string, pid: number): void {
    const child = spawn(bpftrace, ['-f', 'json', '-p', String(pid), '-e', program(libc, pid)], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.#child = child;
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      if (stderr.length < 4096) stderr += chunk.toString();
    });
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => this.#line(line));
    child.on('error', (error: NodeJS.ErrnoException) => {
      this.#child = undefined;
      const reason = error.code === 'ENOENT' ? `${bpftrace} is not installed (Debian package bpftrace)` : `cannot run ${bpftrace}: ${error.message}`;
      this.#logger.info({ reason }, `eBPF collector off: ${reason}`);
    });
    child.on('exit', (code, signal) => {
      if (this.#child === undefined) return;
      this.#child = undefined;
      // bpftrace warns about RLIMIT_MEMLOCK and runs anyway: only other lines say why it stopped.
      const why = stderr
        .split('\n')
        .filter((l) => l.trim() !== '' && !/RLIMIT_MEMLOCK|uprobe_events|failed to detach/.test(l))
        .slice(0, 3)
        .join('; ');
      this.#logger.info({ code, signal, attached: this.#attached }, `eBPF collector off: bpftrace exited${why === '' ? '' : `: ${why}`}`);
    });
  }

  #line(line: string): void {
    let event: { type?: string; data?: Record<string, unknown> };
    try {
      event = JSON.parse(line) as typeof event;
    } catch {
      return;
    }
    if (event.type === 'attached_probes') {
      this.#attached = true;
      this.#logger.info({ probes: (event.data as { probes?: number } | undefined)?.probes }, 'eBPF collector on: fsync/fdatasync latency and on-CPU samples');
      return;
    }
    for (const [map, value] of Object.entries(event.data ?? {})) {
      if (event.type === 'hist' && Array.isArray(value)) {
        const call = map.slice(1);
        if (!this.#histograms.has(call)) this.#histograms.set(call, this.#counters.histogram?.('ebpf.fsync_seconds', { call }));
        const series = this.#histograms.get(call);
        // A bucket [min, max] µs is counted at its upper bound, the next power of two.
        for (const bucket of value as { max?: number; count: number }[]) if (bucket.count > 0) series?.record(((bucket.max ?? 0) + 1) / 1e6, bucket.count);
      } else if (event.type === 'map' && map === '@cpu' && typeof value === 'object' && value !== null) {
        for (const [thread, samples] of Object.entries(value as Record<string, number>)) this.#counters.count('ebpf.cpu_samples', { thread }, samples);
      }
    }
  }

  /** Stops bpftrace. */
  stop(): void {
    const child = this.#child;
    this.#child = undefined;
    child?.kill('SIGINT');
  }
}

/** The libc the process has mapped (its fsync is the one SQLite calls). */
function libcOf(pid: number): string | undefined {
  try {
    const maps = readFileSync(`/proc/${pid}/maps`, 'utf8');
    return maps.match(/\s(\/\S*\/libc(?:\.so\.6|-[\d.]+\.so))$/m)?.[1];
  } catch {
    return undefined;
  }
}
