import { existsSync } from 'node:fs';
import type { Logger } from 'pino';
import type { Counters } from '../core/component.ts';
import { checkInBackground } from './background-check.ts';
import { historyPath, historyWritersOpen } from './history-store.ts';
import { checkMarkerPath, isCorruption, moveAside, removeMarker, tryMarkForCheck } from './open-checked.ts';

/**
 * What `recoverMarkedHistory` did: `none`, no mark; `passed`, the check found nothing and the mark
 * went; `moved`, the history was corrupt and was moved aside; `busy`, another connection of this
 * process writes the file, so it can only be moved aside at the next start.
 */
export type HistoryRecovery = 'none' | 'passed' | 'moved' | 'busy';

/** The check running for each history file: every sink opening it meanwhile waits for that one. */
const checking = new Map<string, Promise<HistoryRecovery>>();
/**
 * Files whose check passed in this process: found corrupt again, they are moved aside without
 * another (quick_check does not compare an index with its table, where a write can meet damage).
 */
const passed = new Set<string>();

/**
 * A write that met a corrupt page (SQLITE_CORRUPT) marks the history. Its sink's next try, once
 * its writer closed, checks it (`recoverMarkedHistory`).
 */
export function markCorruptHistory(dataDir: string, error: unknown, foundBy: string, logger: Logger): void {
  if (!isCorruption(error)) return;
  const path = historyPath(dataDir);
  const notMarked = tryMarkForCheck(path, `found corrupt by ${foundBy}: ${String((error as Error).message)}`);
  if (notMarked === undefined) {
    logger.error({ err: error, path }, `history database is corrupt (found by ${foundBy}): it is checked, and moved aside if the check agrees, before the next write`);
  } else {
    logger.error(
      { err: error, path, notMarked: notMarked.message },
      `history database is corrupt (found by ${foundBy}) and could not be marked: stop the gateway and move ${path} aside`,
    );
  }
}

/**
 * Before a history sink opens its writer: a history marked corrupt (by a write of this run or an
 * earlier one) is checked in a process of its own (`PRAGMA quick_check`; the event loop goes on).
 * Corrupt, it is moved aside with its WAL (`history.db.corrupt-<time>`, kept for inspection) and
 * the writer starts an empty one; the messages waiting in the buffer go there. Intact (a read
 * that failed once), the mark goes. A check that could not run throws, and the sink tries again.
 */
export async function recoverMarkedHistory(dataDir: string, logger: Logger, counters: Counters): Promise<HistoryRecovery> {
  const path = historyPath(dataDir);
  const running = checking.get(path);
  if (running !== undefined) return running;
  if (!existsSync(checkMarkerPath(path))) return 'none';
  if (!existsSync(path)) {
    // Moved or removed by hand since it was marked: the writer starts a new one.
    removeMarker(path);
    return 'none';
  }
  if (historyWritersOpen(path) > 0) return 'busy';
  const recovery = check(path, logger, counters).finally(() => checking.delete(path));
  checking.set(path, recovery);
  return recovery;
}

async function check(path: string, logger: Logger, counters: Counters): Promise<HistoryRecovery> {
  logger.warn({ path }, 'history database marked corrupt: checking it before writing to it again');
  const result = passed.has(path) ? ({ outcome: 'corrupt', detail: 'found corrupt again after its check passed', ms: 0 } as const) : await checkInBackground(path).done;
  if (result.outcome === 'ok') {
    passed.add(path);
    removeMarker(path);
    counters.count('history.integrity_checks', { result: 'ok' });
    logger.warn({ path, ms: result.ms }, 'history database passed its check: writing to it again');
    return 'passed';
  }
  if (result.outcome !== 'corrupt') {
    counters.count('history.integrity_checks', { result: 'failed' });
    throw new Error(`could not check the history database ${path}: ${result.outcome === 'failed' ? result.detail : 'stopped'}`);
  }
  counters.count('history.integrity_checks', { result: 'corrupt' });
  // Nothing of this process opened it meanwhile: every open waited for this check.
  const aside = moveAside(path);
  passed.delete(path);
  logger.error(
    { path, movedTo: aside, detail: result.detail, ms: result.ms },
    'history database is corrupt: moved it aside and started an empty one; the messages in it are not shown by `ferry history` any more',
  );
  return 'moved';
}
