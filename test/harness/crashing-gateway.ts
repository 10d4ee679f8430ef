import Database from 'better-sqlite3';
import { type RunningFerry, startFerry } from './ferry-process.ts';

/** The parts of GET /api/status the crash test reads. */
export interface BufferStatus {
  readonly state: string;
  readonly buffer: {
    readonly state: string;
    readonly held: number;
    readonly movedAside?: string;
    readonly bridges: readonly {
      bridge: string;
      messages: number;
      sinks: readonly { sink: string; cursor: number; pending: number; deadLetters: number }[];
      deadLetters: number;
    }[];
  };
  readonly counters: Record<string, number>;
}

export async function fetchStatus(adminUrl: string): Promise<BufferStatus> {
  const response = await fetch(`${adminUrl}/api/status`, { signal: AbortSignal.timeout(5_000) });
  if (!response.ok) throw new Error(`GET ${adminUrl}/api/status: ${response.status}`);
  return (await response.json()) as BufferStatus;
}

/** Messages the first sink of `bridge` has not confirmed yet. */
export function pendingOf(status: BufferStatus, bridge: string): number {
  const found = status.buffer.bridges.find((b) => b.bridge === bridge);
  if (found === undefined) throw new Error(`bridge '${bridge}' is not in the buffer status: ${status.buffer.bridges.map((b) => b.bridge).join(', ')}`);
  const sink = found.sinks[0];
  if (sink === undefined) throw new Error(`bridge '${bridge}' has no sink in the buffer status`);
  return sink.pending;
}

/** `PRAGMA integrity_check` on a read-only connection; 'ok' when the database is sound. */
export function integrityCheck(path: string): string {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    db.pragma('busy_timeout = 5000');
    const rows = db.pragma('integrity_check') as { integrity_check: string }[];
    return rows.map((r) => r.integrity_check).join('; ');
  } finally {
    db.close();
  }
}

/**
 * `ferry run` that a test kills with SIGKILL and starts again with the same arguments (so the
 * same MQTT port and data directory). Every incarnation's logs are kept.
 */
export class CrashingGateway {
  readonly #args: readonly string[];
  readonly #env: NodeJS.ProcessEnv;
  #current: RunningFerry;
  kills = 0;
  /** Milliseconds from spawn to ready, per start. */
  readonly readyTimes: number[] = [];
  /** Log lines of the incarnations that are over. */
  readonly pastLogs: Record<string, unknown>[][] = [];

  private constructor(args: readonly string[], env: NodeJS.ProcessEnv, first: RunningFerry) {
    this.#args = args;
    this.#env = env;
    this.#current = first;
    this.readyTimes.push(first.readyAfterMs);
  }

  static async start(args: readonly string[], env: NodeJS.ProcessEnv): Promise<CrashingGateway> {
    return new CrashingGateway(args, env, await startFerry(args, env));
  }

  get current(): RunningFerry {
    return this.#current;
  }

  get starts(): number {
    return this.readyTimes.length;
  }

  /** SIGKILL, then resolves once the process is gone (its port and file locks are free). */
  async kill(): Promise<void> {
    this.#current.child.kill('SIGKILL');
    await this.#current.exited;
    this.kills += 1;
    this.pastLogs.push(this.#current.logs);
  }

  /** Starts a new incarnation; resolves when it accepts MQTT connections. */
  async restart(): Promise<RunningFerry> {
    this.#current = await startFerry(this.#args, this.#env);
    this.readyTimes.push(this.#current.readyAfterMs);
    return this.#current;
  }

  /** SIGTERM (graceful drain); resolves with the exit code. */
  async stop(): Promise<number | null> {
    this.#current.child.kill('SIGTERM');
    return this.#current.exited;
  }

  /** For `finally`: SIGKILL whatever still runs. */
  forceKill(): void {
    const { child } = this.#current;
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }

  /** Every log line at level warn (40) or above, of every incarnation, with its incarnation number. */
  problems(): { incarnation: number; line: Record<string, unknown> }[] {
    return [...this.pastLogs, this.#current.logs].flatMap((logs, incarnation) =>
      logs.filter((line) => typeof line['level'] === 'number' && line['level'] >= 40).map((line) => ({ incarnation, line })),
    );
  }
}
