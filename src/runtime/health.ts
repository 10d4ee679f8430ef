import type { Logger } from 'pino';
import type { Counters } from '../core/component.ts';
import type { BufferStore } from '../buffer/store.ts';
import type { BufferWriter } from '../buffer/writer.ts';
import type { BridgeProblem } from './bridge-parts.ts';
import type { GatewayBridge } from './bridge.ts';

export interface HealthSettings {
  readonly stalledAfterMs: number;
  readonly maxBacklogAgeMs: number;
}

/** What /readyz and /api/status say of the gateway. */
export interface Health {
  /** False while device traffic is refused (then /readyz answers 503 with `reason`). */
  readonly ready: boolean;
  readonly reason?: string;
  /** Trouble upstream that does not stop the gateway taking traffic. */
  readonly degraded: readonly BridgeProblem[];
}

const CHECK_MS = 2000;

/** Why device traffic is refused now (/readyz answers 503 with it), or undefined: the gateway not running or not listening yet, or the buffer not taking messages. */
export function refusal(state: string, listening: boolean, writer: BufferWriter | undefined): string | undefined {
  if (state !== 'running') return `the gateway is ${state}`;
  if (!listening) return 'the gateway is starting';
  if (writer === undefined) return undefined;
  if (writer.state === 'disk-full') return 'the disk is full: device messages are not acknowledged until space returns';
  if (writer.state === 'write-failed') return 'the buffer cannot be written: device messages are not acknowledged';
  if (writer.state === 'refusing') return `bridge(s) ${writer.heldBridges().join(', ')} full under overflow: refuse: their device messages are not acknowledged`;
  return undefined;
}

/**
 * Watches the bridges for trouble upstream (issue 16: a sink down or hung, or a backlog growing
 * old, went unreported): every check lists each bridge's problems and the buffer's backlog ages,
 * and logs each problem once when it starts and once when it ends.
 */
export class HealthWatch {
  readonly #bridges: () => readonly GatewayBridge[];
  readonly #store: () => BufferStore | undefined;
  readonly #settings: () => HealthSettings;
  readonly #logger: Logger;
  readonly #counters: Counters;
  readonly #timer: NodeJS.Timeout;
  #current = new Map<string, BridgeProblem>();
  /** Set while the buffer's backlog ages cannot be read. */
  #unreadable = false;

  constructor(deps: { bridges: () => readonly GatewayBridge[]; store: () => BufferStore | undefined; settings: () => HealthSettings; logger: Logger; counters: Counters }) {
    this.#bridges = deps.bridges;
    this.#store = deps.store;
    this.#settings = deps.settings;
    this.#logger = deps.logger;
    this.#counters = deps.counters;
    this.#timer = setInterval(() => this.check(), CHECK_MS);
    this.#timer.unref();
  }

  /** The problems now; logs those that started or ended since the last check. */
  check(now = Date.now()): BridgeProblem[] {
    const { stalledAfterMs, maxBacklogAgeMs } = this.#settings();
    const found: BridgeProblem[] = [];
    const store = this.#store();
    let unreadable: unknown;
    for (const bridge of this.#bridges()) {
      found.push(...bridge.problems(now, stalledAfterMs));
      if (store === undefined || !store.isOpen || maxBacklogAgeMs === 0 || unreadable !== undefined) continue;
      try {
        found.push(...backlogs(store, bridge.config.name, now, maxBacklogAgeMs));
      } catch (error) {
        unreadable = error;
      }
    }
    this.#noteUnreadable(unreadable);
    // Backlogs that could not be read again are not over: they stay listed.
    if (unreadable !== undefined) for (const p of this.#current.values()) if (p.problem === 'backlog' && !found.some((f) => keyOf(f) === keyOf(p))) found.push(p);
    const next = new Map(found.map((p) => [keyOf(p), p]));
    for (const [key, problem] of next) {
      if (this.#current.has(key)) continue;
      this.#counters.count('health.problems', { problem: problem.problem });
      this.#logger.warn({ bridge: problem.bridge, sink: problem.sink, problem: problem.problem, detail: problem.detail }, `degraded: ${describe(problem)}`);
    }
    for (const [key, problem] of this.#current) {
      if (!next.has(key))
        this.#logger.info({ bridge: problem.bridge, sink: problem.sink, problem: problem.problem }, `no longer degraded: ${where(problem)} ${problem.problem} cleared`);
    }
    this.#current = next;
    return found;
  }

  /**
   * A statement on the buffer that failed (SQLITE_CORRUPT, a lock held past the busy timeout)
   * leaves the backlog ages out of the check: thrown from the check's timer or from /readyz it
   * would end the process without the drain and exit code 75 that the buffer's own reads and
   * writes give a corrupt buffer. Logged once, and once when the ages can be read again.
   */
  #noteUnreadable(error: unknown): void {
    if (error !== undefined && !this.#unreadable) this.#logger.error({ err: error }, 'health: the buffer cannot be read, so backlog ages are not checked until it can');
    if (error === undefined && this.#unreadable) this.#logger.info('health: the buffer can be read again; backlog ages are checked again');
    this.#unreadable = error !== undefined;
  }

  /** At a stop: warns of the sinks down or stalled, which the drain waits for up to `waitMs`. */
  warnStuck(waitMs: number): void {
    const stuck = this.check().filter((p) => p.problem === 'down' || p.problem === 'stalled');
    if (stuck.length === 0) return;
    this.#logger.warn(
      { waitMs, sinks: stuck.map((p) => `${p.bridge}/${p.sink ?? ''}`) },
      `draining waits up to the drain timeout for sinks that cannot finish now: ${stuck.map((p) => `sink '${p.sink ?? ''}' of bridge '${p.bridge}' is ${p.problem} (${p.detail})`).join('; ')}; what they hold stays buffered for the next start`,
    );
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}

/** The sinks of `bridge` whose oldest undelivered message is older than `maxAgeMs`. */
function backlogs(store: BufferStore, bridge: string, now: number, maxAgeMs: number): BridgeProblem[] {
  const found: BridgeProblem[] = [];
  for (const { sink } of store.cursors(bridge)) {
    const oldest = store.oldestPendingAt(bridge, sink);
    if (oldest !== null && now - oldest > maxAgeMs) {
      found.push({ bridge, sink, problem: 'backlog', detail: `oldest undelivered message is ${Math.round((now - oldest) / 1000)} s old`, since: oldest });
    }
  }
  return found;
}

function keyOf(p: BridgeProblem): string {
  return `${p.bridge}\u0000${p.sink ?? ''}\u0000${p.problem}`;
}

function where(p: BridgeProblem): string {
  return p.sink === undefined ? `bridge '${p.bridge}'` : `sink '${p.sink}' of bridge '${p.bridge}'`;
}

function describe(p: BridgeProblem): string {
  switch (p.problem) {
    case 'stalled':
      return `${where(p)} is stalled: ${p.detail} (is the upstream hung?); its messages stay buffered`;
    case 'down':
      return `${where(p)} is down: ${p.detail}`;
    case 'backlog':
      return `${where(p)} is behind: ${p.detail}`;
    default:
      return `${where(p)}: ${p.detail}`;
  }
}
