import type { BufferStore } from '../../buffer/store.ts';
import type { DataDirOptions } from '../load.ts';
import { formatAge, formatBytes, formatTable } from './format.ts';
import { withBuffer } from './open.ts';

export interface StatsOptions extends DataDirOptions {
  readonly json?: boolean;
}

interface Pending {
  readonly pending: number;
  readonly pendingBytes: number;
  /** Milliseconds since the oldest pending message entered Ferry; null when none is pending. */
  readonly oldestPendingAgeMs: number | null;
  readonly deadLetters: number;
}

interface Report {
  readonly buffer: string;
  readonly bridges: readonly (Pending & { bridge: string; sinks: readonly (Pending & { sink: string; cursor: number; liveMark: number | null })[] })[];
  readonly totals: Pending;
}

export function statsCommand(options: StatsOptions): Promise<void> {
  return withBuffer(options, 'read', (store, path) => {
    // One snapshot: a sink's pending count never exceeds what its bridge holds in the report.
    const report = store.snapshot(() => collect(store, path, Date.now()));
    process.stdout.write(options.json === true ? `${JSON.stringify(report, null, 2)}\n` : `${table(report)}\n`);
  });
}

/** A bridge's pending messages are all it holds: a message is deleted once every sink is past it. */
function collect(store: BufferStore, path: string, now: number): Report {
  const age = (at: number | null) => (at === null ? null : Math.max(0, now - at));
  const bridges = store.bridges().map((name) => {
    const stats = store.stats(name);
    return {
      bridge: name,
      pending: stats.messages,
      pendingBytes: stats.bytes,
      oldestPendingAgeMs: age(stats.oldestAt),
      deadLetters: stats.deadLetters,
      sinks: stats.sinks.map((s) => ({
        sink: s.sink,
        cursor: s.cursor,
        liveMark: s.liveMark,
        pending: s.pending,
        pendingBytes: s.pendingBytes,
        oldestPendingAgeMs: age(s.oldestPendingAt),
        deadLetters: s.deadLetters,
      })),
    };
  });
  const ages = bridges.map((b) => b.oldestPendingAgeMs).filter((a) => a !== null);
  const totals = {
    pending: bridges.reduce((n, b) => n + b.pending, 0),
    pendingBytes: bridges.reduce((n, b) => n + b.pendingBytes, 0),
    oldestPendingAgeMs: ages.length === 0 ? null : Math.max(...ages),
    deadLetters: bridges.reduce((n, b) => n + b.deadLetters, 0),
  };
  return { buffer: path, bridges, totals };
}

function table(report: Report): string {
  const cells = (p: Pending) => [String(p.pending), formatBytes(p.pendingBytes), p.oldestPendingAgeMs === null ? '-' : formatAge(p.oldestPendingAgeMs), String(p.deadLetters)];
  const rows = [['BRIDGE / SINK', 'PENDING', 'BYTES', 'OLDEST', 'DEAD LETTERS']];
  for (const bridge of report.bridges) {
    rows.push([bridge.bridge, ...cells(bridge)]);
    for (const sink of bridge.sinks) rows.push([`  ${sink.sink}`, ...cells(sink)]);
  }
  rows.push(['total', ...cells(report.totals)]);
  return formatTable(rows);
}
